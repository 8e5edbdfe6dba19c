"""Question families as data: a program over a video's event timeline, its wordings, its sampling constraints and
its answer type, read from a YAML (or JSON) file (format: docs/families.md).

The same program runs on two timelines:
- the truth of a planned video (world.py), when the world is built: it gives the answer, the segments the question
  needs (its target spans and the gold frames) and whether the question may be asked at all (the constraints);
- what the embedded answerer perceives in the selected frames alone (PerceivedTimeline in answerers/embedded.py):
  runs of frames labelled with the same object, where an edge, a fraction of the video or an event count needs
  evidence in the frames, and a program without evidence fails.

Primitives, each taking what the previous one gave (the first takes the video's timeline):
  find: [colour, shape]   timeline -> the events showing that object (slots named by the attributes: {colour} ...)
  appearance: first | last | n    events -> its n-th (1-based), first or last event
  step: n                 event -> the event n steps after it (n < 0: before)
  event: k | last         timeline -> the k-th (1-based) or the last event of the video
  at_fraction: f          timeline -> the event shown at fraction f of the video
  between: [[...], [...]] timeline -> the events strictly between the events two sub-programs give
  count: true             events -> how many
  attribute: colour | shape | object   event or events -> the value (the most frequent one over several events)
"""
from __future__ import annotations

import itertools
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, Sequence

import yaml

from tspo_ray.synthetic.render import COLOURS, SHAPES

SHIPPED_DIR = Path(__file__).resolve().parent / "families"
ANSWER_TYPES = ("object", "colour", "shape", "count")
ATTRIBUTES = ("colour", "shape")
SLOT_VALUES = {"colour": tuple(COLOURS), "shape": tuple(SHAPES)}
PRIMITIVES = ("find", "appearance", "step", "event", "at_fraction", "between", "count", "attribute")
CONSTRAINTS = ("appearances", "needle", "answer_needle")
# what each primitive takes and gives: timeline, events (several), event (one), value
_TYPES = {"find": ("timeline", "events"), "appearance": ("events", "event"), "step": ("event", "event"),
          "event": ("timeline", "event"), "at_fraction": ("timeline", "event"), "between": ("timeline", "events"),
          "count": ("events", "value"), "attribute": (("event", "events"), "value")}


class FamilyError(ValueError):
    """A family file that cannot be used; the message names the file, the part and the reason."""


class NoEvidence(Exception):
    """The program cannot run on this timeline (an event out of range, an edge or fraction not in the frames)."""


# --- timelines ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Event:
    """One event of a timeline: the object shown (None: an event known to exist but not seen) and how much of it
    was seen (frames), for majorities over several events."""

    colour: str | None
    shape: str | None
    needle: bool = False
    weight: int = 1

    @property
    def name(self) -> str | None:
        return None if self.colour is None else f"a {self.colour} {self.shape}"


class Timeline(Protocol):
    events: Sequence[Event]

    def starts_at_video_start(self) -> bool: ...

    def ends_at_video_end(self) -> bool: ...

    def event_at(self, fraction: float) -> int | None: ...


@dataclass
class TrueTimeline:
    """A planned video's segments, every one seen, edges and times known exactly."""

    events: list[Event]
    spans: list[tuple[float, float]]
    duration_s: float

    @classmethod
    def of_plan(cls, plan) -> "TrueTimeline":
        return cls([Event(s.colour, s.shape, s.needle) for s in plan.segments], [s.span for s in plan.segments],
                   plan.duration_s)

    def starts_at_video_start(self) -> bool:
        return True

    def ends_at_video_end(self) -> bool:
        return True

    def event_at(self, fraction: float) -> int | None:
        t = fraction * self.duration_s
        return next((i for i, (a, b) in enumerate(self.spans) if a <= t < b), len(self.spans) - 1)


# --- programs ----------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Result:
    """What a program gave: the value, the events it ended on, and every event it needed to look at."""

    value: Any
    events: tuple[int, ...]
    touched: tuple[int, ...]


def run_program(program: Sequence[dict], timeline: Timeline, slots: dict[str, str]) -> Result:
    """Execute a validated program; NoEvidence when it cannot be answered on this timeline. Pure."""
    events, touched, value = None, set(), None  # events: indices the pipeline holds (one for "event")
    for step in program:
        (op, arg), = step.items()
        ev = timeline.events
        if op == "find":
            want = {a: slots[a] for a in arg}
            events = [i for i, e in enumerate(ev)
                      if e.colour is not None and all(getattr(e, a) == v for a, v in want.items())]
            touched |= set(events)
        elif op == "appearance":
            if not events:
                raise NoEvidence("nothing found")
            n = {"first": 1, "last": len(events)}.get(arg, arg)
            if not 1 <= n <= len(events):
                raise NoEvidence(f"no appearance {n} of {len(events)}")
            touched |= set(events[:n]) if arg != "last" else set(events)
            events = [events[n - 1]]
        elif op == "step":
            i = events[0] + arg
            if not 0 <= i < len(ev) or ev[i].colour is None:
                raise NoEvidence(f"no event {arg:+d} steps from event {events[0]}")
            touched |= set(range(min(i, events[0]), max(i, events[0]) + 1))
            events = [i]
        elif op == "event":
            if arg == "last":
                if not ev or not timeline.ends_at_video_end():
                    raise NoEvidence("the end of the video is not in the frames")
                i = len(ev) - 1
            else:
                if not timeline.starts_at_video_start():
                    raise NoEvidence("the start of the video is not in the frames")
                i = arg - 1
                touched |= set(range(0, min(i, len(ev))))
            if not 0 <= i < len(ev) or ev[i].colour is None:
                raise NoEvidence(f"no event {arg}")
            touched.add(i)
            events = [i]
        elif op == "at_fraction":
            i = timeline.event_at(arg)
            if i is None or ev[i].colour is None:
                raise NoEvidence(f"nothing seen at {arg:g} of the video")
            touched.add(i)
            events = [i]
        elif op == "between":
            ends = [run_program(sub, timeline, slots) for sub in arg]
            a, b = sorted(r.events[0] for r in ends)
            touched |= set(ends[0].touched) | set(ends[1].touched) | set(range(a, b + 1))
            events = list(range(a + 1, b))
        elif op == "count":
            value = len(events)
            touched |= {i + 1 for i in events[:-1] if i + 1 < len(ev)}  # what separates the events
        elif op == "attribute":
            if not events:
                raise NoEvidence("nothing found")
            votes = Counter()
            for i in events:
                e = ev[i]
                votes[e.name if arg == "object" else getattr(e, arg)] += e.weight
            value = votes.most_common(1)[0][0]
    return Result(value, tuple(events or ()), tuple(sorted(touched)))


# --- family files ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Variant:
    form: str
    program: tuple[dict, ...]
    wordings: tuple[str, ...]
    answer: str = "object"
    constraints: dict = field(default_factory=dict)  # the family's, with this variant's own on top

    @property
    def slots(self) -> tuple[str, ...]:
        """The slots the program binds, in order (those of find)."""
        return tuple(a for step in self.program for op, arg in step.items() if op == "find" for a in arg)


@dataclass(frozen=True)
class Family:
    name: str
    variants: tuple[Variant, ...]
    per_video: int | None = None
    balance: bool = False  # spread the questions of a video over their answers (counting)
    source: str = ""
    text: str = ""  # the file as written, for the world's manifest

    def to_manifest(self) -> dict:
        return {"name": self.name, "file": Path(self.source).name, "text": self.text}


def _bad(source: str, where: str, why: str) -> FamilyError:
    return FamilyError(f"{source}: {where}: {why}")


def _check_program(program: Any, source: str, where: str, top: bool = True) -> tuple[dict, ...]:
    if not isinstance(program, list) or not program:
        raise _bad(source, where, "a program is a non-empty list of steps")
    have = "timeline"
    out = []
    for k, step in enumerate(program):
        at = f"{where}[{k}]"
        if not isinstance(step, dict) or len(step) != 1:
            raise _bad(source, at, f"a step is one primitive and its argument, e.g. {{step: 1}}, got {step!r}")
        (op, arg), = step.items()
        if op not in PRIMITIVES:
            raise _bad(source, at, f"unknown primitive {op!r}; known: {', '.join(PRIMITIVES)}")
        takes, gives = _TYPES[op]
        if have not in (takes if isinstance(takes, tuple) else (takes,)):
            raise _bad(source, at, f"{op} takes {takes if isinstance(takes, str) else ' or '.join(takes)}, but the "
                       f"step before gives {'the video timeline' if have == 'timeline' else have}")
        if op == "find":
            ok = isinstance(arg, list) and arg and all(a in ATTRIBUTES for a in arg) and len(set(arg)) == len(arg)
            if not ok:
                raise _bad(source, at, f"find takes a list of attributes out of {list(ATTRIBUTES)}, got {arg!r}")
        elif op == "appearance" and not (arg in ("first", "last") or (isinstance(arg, int) and arg >= 1)):
            raise _bad(source, at, f"appearance takes first, last or n >= 1, got {arg!r}")
        elif op == "step" and not (isinstance(arg, int) and not isinstance(arg, bool) and arg != 0):
            raise _bad(source, at, f"step takes a non-zero whole number, got {arg!r}")
        elif op == "event" and not (arg == "last" or (isinstance(arg, int) and arg >= 1)):
            raise _bad(source, at, f"event takes last or k >= 1, got {arg!r}")
        elif op == "at_fraction" and not (isinstance(arg, (int, float)) and 0 < arg < 1):
            raise _bad(source, at, f"at_fraction takes a fraction strictly between 0 and 1, got {arg!r}")
        elif op == "between":
            if not isinstance(arg, list) or len(arg) != 2:
                raise _bad(source, at, "between takes two sub-programs, each ending on one event")
            arg = [_check_program(sub, source, f"{at}.between[{j}]", top=False) for j, sub in enumerate(arg)]
            for j, sub in enumerate(arg):
                if _gives(sub) != "event":
                    raise _bad(source, f"{at}.between[{j}]", "must end on one event")
        elif op == "count" and arg is not True:
            raise _bad(source, at, f"count takes true, got {arg!r}")
        elif op == "attribute" and arg not in ATTRIBUTES + ("object",):
            raise _bad(source, at, f"attribute takes colour, shape or object, got {arg!r}")
        out.append({op: arg})
        have = gives
    if top and have != "value":
        raise _bad(source, where, "a program must end with count or attribute (it gives the answer)")
    return tuple(out)


def _gives(program: Sequence[dict]) -> str:
    return _TYPES[next(iter(program[-1]))][1]


def _answer_of(program: Sequence[dict]) -> str:
    (op, arg), = program[-1].items()
    return "count" if op == "count" else arg


def wording_regex(wording: str) -> re.Pattern:
    """A wording's template as a regex over question texts: each {slot} one of its values. Pure."""
    out, pos = "", 0
    for m in re.finditer(r"\{(\w+)\}", wording):
        out += re.escape(wording[pos:m.start()]) + f"(?P<{m.group(1)}>{'|'.join(SLOT_VALUES[m.group(1)])})"
        pos = m.end()
    return re.compile(out + re.escape(wording[pos:]), re.I)


def _check_wordings(wordings: Any, slots: tuple[str, ...], source: str, where: str) -> tuple[str, ...]:
    if not isinstance(wordings, list) or not wordings or not all(isinstance(w, str) and w.strip() for w in wordings):
        raise _bad(source, where, "wordings is a non-empty list of question templates")
    for j, w in enumerate(wordings):
        used = re.findall(r"\{(\w+)\}", w)
        unknown = [s for s in used if s not in SLOT_VALUES]
        if unknown:
            raise _bad(source, f"{where}[{j}]", f"{w!r}: unknown slot {{{unknown[0]}}}; slots: {list(SLOT_VALUES)}")
        if sorted(used) != sorted(slots):
            raise _bad(source, f"{where}[{j}]", f"{w!r} names the slots {sorted(used)}, but the program's find binds "
                       f"{sorted(slots)}: every slot must appear exactly once")
    return tuple(w.strip() for w in wordings)


def parse_family(raw: Any, source: str, text: str = "") -> Family:
    """A family from its parsed file; FamilyError naming the file and the part for anything malformed."""
    if not isinstance(raw, dict):
        raise _bad(source, "top level", "a family file is a mapping with family, answer and variants")
    known = {"family", "answer", "variants", "constraints", "per_video", "balance"}
    extra = sorted(set(raw) - known)
    if extra:
        raise _bad(source, extra[0], f"unknown key; known: {', '.join(sorted(known))}")
    name = raw.get("family")
    if not isinstance(name, str) or not re.fullmatch(r"[a-z][a-z0-9_]*", name or ""):
        raise _bad(source, "family", f"a lower-case name (letters, digits, _), got {name!r}")
    variants_raw = raw.get("variants")
    if not isinstance(variants_raw, list) or not variants_raw:
        raise _bad(source, "variants", "a non-empty list of {form, program, wordings}")
    family_constraints = _check_constraints(raw.get("constraints"), source, "constraints")
    variants = []
    for i, v in enumerate(variants_raw):
        where = f"variants[{i}]"
        if not isinstance(v, dict) or set(v) - {"form", "program", "wordings", "answer", "constraints"} \
                or "program" not in v:
            raise _bad(source, where, "each variant has form, program and wordings (optionally answer and "
                       "constraints) and nothing else")
        answer = v.get("answer", raw.get("answer"))
        if answer not in ANSWER_TYPES:
            raise _bad(source, f"{where}.answer", f"must be one of {', '.join(ANSWER_TYPES)} (on the family or "
                       f"the variant), got {answer!r}")
        program = _check_program(v["program"], source, f"{where}.program")
        if _answer_of(program) != answer:
            raise _bad(source, f"{where}.program", f"gives a {_answer_of(program)}, but the answer type is {answer}")
        slots = Variant("", program, ()).slots
        constraints = family_constraints | _check_constraints(v.get("constraints"), source, f"{where}.constraints")
        variants.append(Variant(str(v.get("form", i)), program,
                                _check_wordings(v.get("wordings"), slots, source, f"{where}.wordings"), answer,
                                constraints))
    per_video = raw.get("per_video")
    if per_video is not None and not (isinstance(per_video, int) and per_video >= 1):
        raise _bad(source, "per_video", f"must be >= 1 or absent (all), got {per_video!r}")
    return Family(name, tuple(variants), per_video, bool(raw.get("balance", False)), source, text)


def _check_constraints(raw: Any, source: str, where: str) -> dict:
    raw = raw or {}
    if not isinstance(raw, dict) or set(raw) - set(CONSTRAINTS):
        raise _bad(source, where, f"a mapping of {', '.join(CONSTRAINTS)}, got {raw!r}")
    if "appearances" in raw and not (isinstance(raw["appearances"], int) and raw["appearances"] >= 1):
        raise _bad(source, f"{where}.appearances", f"must be a whole number >= 1, got {raw['appearances']!r}")
    for key in ("needle", "answer_needle"):
        if key in raw and not isinstance(raw[key], bool):
            raise _bad(source, f"{where}.{key}", f"must be true or false, got {raw[key]!r}")
    return dict(raw)


def load_family(path: str | Path) -> Family:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise FamilyError(f"{path}: cannot read the family file ({exc.strerror or exc})") from None
    return family_from_text(text, str(path))


#: bounds on a family file: real ones are a few kB and nest fewer than 10 levels
MAX_FAMILY_BYTES = 256 * 1024
MAX_FAMILY_DEPTH = 32


class _FamilyYamlLoader(yaml.SafeLoader):
    """SafeLoader without aliases (`*name`: a few bytes of them expand into exponential work, or into a structure that
    holds itself) and with a nesting bound, checked as each node is composed, before anything is built."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise yaml.YAMLError(f"YAML aliases (*name) are not accepted in family files (line {mark.line + 1})")
        self._depth = getattr(self, "_depth", 0) + 1
        try:
            if self._depth > MAX_FAMILY_DEPTH:
                mark = self.peek_event().start_mark
                raise yaml.YAMLError(f"nested deeper than {MAX_FAMILY_DEPTH} levels (line {mark.line + 1})")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _json_depth(text: str) -> int:
    """The deepest bracket nesting of a JSON text (strings skipped), without parsing it."""
    depth = deepest = 0
    for token in re.finditer(r'"(?:[^"\\]|\\.)*"|[\[{]|[\]}]', text):
        t = token.group()
        if t in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif t in "]}":
            depth -= 1
    return deepest


def family_from_text(text: str, source: str) -> Family:
    kind = "JSON" if source.endswith(".json") else "YAML"
    if len(text.encode("utf-8", "replace")) > MAX_FAMILY_BYTES:
        raise FamilyError(f"{source}: the family file is larger than {MAX_FAMILY_BYTES // 1024} KiB")
    try:
        if kind == "JSON":
            if _json_depth(text) > MAX_FAMILY_DEPTH:
                raise ValueError(f"nested deeper than {MAX_FAMILY_DEPTH} levels")
            raw = json.loads(text)
        else:
            raw = yaml.load(text, Loader=_FamilyYamlLoader)  # noqa: S506 (a SafeLoader subclass)
    except (ValueError, yaml.YAMLError, RecursionError) as exc:  # JSONDecodeError is a ValueError
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise FamilyError(f"{source}: not valid {kind} ({reason})") from None
    return parse_family(raw, source, text)


def shipped_family_files() -> list[Path]:
    return sorted(SHIPPED_DIR.glob("*.yaml"))


def load_families(paths: Sequence[str | Path] | None = None, vocabulary: set[str] | None = None) -> list[Family]:
    """The families of these files (default: the shipped ones), checked together: names unique, no question text
    read by two wordings, and (given the text encoder's vocabulary) every word known to it."""
    families = [load_family(p) for p in (paths or shipped_family_files())]
    check_families(families, vocabulary)
    return families


def families_from_manifest(entries: Sequence[dict]) -> list[Family]:
    """The families a world was built with, from the copies its manifest keeps."""
    families = [family_from_text(e["text"], e["file"]) for e in entries]
    check_families(families)
    return families


def _instances(wording: str) -> list[tuple[str, dict]]:
    names = re.findall(r"\{(\w+)\}", wording)
    out = []
    for values in itertools.product(*(SLOT_VALUES[n] for n in names)):
        slots = dict(zip(names, values))
        out.append((wording.format(**slots), slots))
    return out


def check_families(families: Sequence[Family], vocabulary: set[str] | None = None) -> None:
    seen: dict[str, str] = {}
    for f in families:
        if f.name in seen:
            raise FamilyError(f"{f.source}: family: {f.name!r} is defined twice (also in {seen[f.name]})")
        seen[f.name] = f.source
    wordings = [(f, v, w, wording_regex(w)) for f in families for v in f.variants for w in v.wordings]
    for f, v, w, _ in wordings:
        if vocabulary is not None:
            for text, _ in _instances(w)[:1]:
                for word in question_words(text):
                    if word not in vocabulary:
                        raise FamilyError(f"{f.source}: wording {w!r}: the word {word!r} is not in the text "
                                          f"encoder's vocabulary; reword it with words the tiny CLIP knows, or "
                                          f"retrain it on a vocabulary that holds it (pipelines/train_tiny_clip.py)")
        for text, _ in _instances(w):
            for g, u, w2, rx in wordings:
                if (g, u, w2) != (f, v, w) and rx.fullmatch(text):
                    raise FamilyError(f"{f.source}: wording {w!r}: the question {text!r} also reads as {w2!r} of "
                                      f"{g.source} ({g.name}, {u.form}): wordings must be unambiguous")


def question_words(text: str) -> list[str]:
    """The words of a question as the tiny CLIP's word-level tokenizer splits them (punctuation apart)."""
    return re.findall(r"\w+|[^\w\s]", text.lower())


# --- matching a question to its program (the answerer's side) ----------------------------------------------------

@dataclass(frozen=True)
class Parsed:
    family: Family
    variant: Variant
    slots: dict[str, str]


class FamilyGrammar:
    """Question text -> (family, variant, slot values) through the families' wordings; exactly one must match."""

    def __init__(self, families: Sequence[Family]):
        self.families = list(families)
        self._rules = [(f, v, wording_regex(w)) for f in families for v in f.variants for w in v.wordings]

    def parse(self, question: str) -> Parsed | None:
        text = " ".join(question.split())
        hits = [(f, v, m) for f, v, rx in self._rules if (m := rx.fullmatch(text))]
        if len(hits) != 1:
            return None  # unknown (or, for families not checked together, ambiguous) wording
        f, v, m = hits[0]
        return Parsed(f, v, {k: s.lower() for k, s in m.groupdict().items()})
