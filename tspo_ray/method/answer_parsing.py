"""Which option an MLLM's free-text answer names: by letter or by the option's text. Pure functions.

Models answer "B", "(B)", "**B**", "B. Candles.", "Answer: B", "The correct option is (c)", "I think it is D)
green", "<answer>b</answer>", reason first and conclude last, or name the option only by its text ("The answer is
a red star"). Evidence is read strongest first:
1. an <answer>...</answer> tag (its content alone is parsed);
2. the whole output is one letter ("b", "(B)", "[A]", "C.");
3. an answer statement ("the answer is / answer: / best option: / correct choice is" + letter or option text),
   the last one when a model corrects itself;
4. an affirmation ("I choose C", "it is D)", "option C is correct", "(B) is the best answer"), the last one;
5. a letter that opens the output ("B) a red star", "C because ...");
6. a bracketed letter "(B)" or an "option B" mention, when exactly one letter is named and not negated;
7. one option's text found in the output (the longest match wins over options it contains).
A lone lower-case "a" counts only when it is the whole answer, bracketed or punctuated ("a)", "answer: a."),
never as the article in "a red star". An upper-case "A" or "I" that opens a sentence ("A man walks ...") is not a
letter unless punctuated either.
"""
from __future__ import annotations

import re
import string
from typing import Sequence

_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.IGNORECASE | re.DOTALL)
_THINK = re.compile(r"<think>.*?</think>", re.IGNORECASE | re.DOTALL)
_WHOLE = re.compile(r"^[\s\"'`]*[\(\[]?\s*([A-Za-z])\s*[\)\]]?\s*[.:]?[\s\"'`]*$")
# A letter token: "(b)", "[B]", or a bare single letter (its context is judged by _bare_letter_ok).
_TOKEN = re.compile(r"[\s\"'`]*(?:option\s+|choice\s+|letter\s+)?"
                    r"(?:\(\s*([A-Za-z])\s*\)|\[\s*([A-Za-z])\s*\]|([A-Za-z])(?![\w'’-]))", re.IGNORECASE)
_STATEMENT = re.compile(
    r"\b(?:(?:final|correct|right|best|most\s+\w+|only)\s+)?(?:answer|option|choice)s?\b\s*"
    r"(?:(?:is|would\s+be|should\s+be|will\s+be|must\s+be|seems\s+to\s+be|appears\s+to\s+be|here\s+is)\b|[:=])"
    r"\s*(?:probably\s+|likely\s+|clearly\s+|definitely\s+)?:?", re.IGNORECASE)
_AFFIRM_CUE = re.compile(
    r"\b(?:I(?:\s+would|\s+will|'d|'ll|’d)?\s+(?:choose|pick|select|go\s+with|answer\s+with|say)"
    r"|(?:it|this|that)(?:\s+is|'s|’s)(?:\s+(?:probably|likely|clearly|definitely))?"
    r"|(?:so|therefore|thus|hence),?\s+(?:the\s+answer\s+)?(?:is\s+)?)", re.IGNORECASE)
_AFFIRMED = re.compile(
    r"(?:\b(?:option|choice)\s+)?(?:\(([A-Za-z])\)|\b([A-Z])\b)\s*(?:is|seems|appears\s+to\s+be|would\s+be)\s+"
    r"(?:the\s+|most\s+)?(?:correct|right|best|accurate|likely|appropriate|true|answer)\b", re.IGNORECASE)
_MENTION = re.compile(r"\(\s*([A-Za-z])\s*\)|\[\s*([A-Za-z])\s*\]|\b(?:option|choice)\s+([A-Za-z])\b", re.IGNORECASE)
_NEGATED_AFTER = re.compile(r"^[\s)\].,:]*(?:is|are|seems|looks|would\s+be)?\s*(?:not|n't|wrong|incorrect|false|"
                            r"unlikely|implausible|ruled\s+out|eliminated)\b", re.IGNORECASE)
_NEGATED_BEFORE = re.compile(r"\b(?:not|n't|rule\s+out|ruled\s+out|eliminate|exclude|except|than)\s*$",
                             re.IGNORECASE)
_ARTICLE = re.compile(r"^(?:a|an|the)\s+", re.IGNORECASE)


def parse_option(text: str, num_options: int, options: Sequence[str] | None = None) -> str | None:
    """The option letter an answer names (upper case), or None when it names none of the valid letters.

    `options` (the option texts, in letter order) lets an answer that names an option only by its text count.
    """
    if not isinstance(text, str) or num_options < 1:
        return None
    letters = string.ascii_uppercase[:num_options]
    texts = [_normal(o) for o in (options or [])][:num_options]
    body = _answer_part(text).replace("**", "").replace("__", "").strip()
    if not body:
        return None
    m = _WHOLE.match(body)
    if m:
        return m.group(1).upper() if m.group(1).upper() in letters else None
    for find in (_last_statement, _last_affirmation, _leading_letter, _single_mention, _single_text):
        found = find(body, letters, texts)
        if found is not None:
            return found
    return None


def _answer_part(text: str) -> str:
    """The last <answer> tag's content; else the text after the reasoning (a <think> block, or everything up to
    a closing </think> whose opening tag was in the prompt); the whole text when nothing follows the reasoning."""
    tagged = _ANSWER_TAG.findall(text)
    if tagged:
        return tagged[-1]
    after = _THINK.sub(" ", text)
    after = re.split(r"</think>", after, flags=re.IGNORECASE)[-1]
    return after if after.strip() else text


# --------------------------------------------------------------------------------------------- evidence readers

def _last_statement(body: str, letters: str, texts: list[str]) -> str | None:
    found = None
    for cue in _STATEMENT.finditer(body):
        found = _named_at(body, cue.end(), letters, texts) or found
    return found


def _last_affirmation(body: str, letters: str, texts: list[str]) -> str | None:
    hits: list[tuple[int, str]] = []
    for cue in _AFFIRM_CUE.finditer(body):
        named = _named_at(body, cue.end(), letters, texts)
        if named:
            hits.append((cue.start(), named))
    for m in _AFFIRMED.finditer(body):
        letter = (m.group(1) or m.group(2)).upper()
        if letter in letters and not _NEGATED_BEFORE.search(body[: m.start()]):
            hits.append((m.start(), letter))
    return max(hits)[1] if hits else None


def _leading_letter(body: str, letters: str, texts: list[str]) -> str | None:
    return _letter_at(body, 0, letters, cue=False, texts=texts)


def _single_mention(body: str, letters: str, texts: list[str]) -> str | None:
    named = set()
    for m in _MENTION.finditer(body):
        letter = (m.group(1) or m.group(2) or m.group(3)).upper()
        if m.group(3) and not m.group(3).isupper():
            continue  # "option a" in running text is too weak to read
        if letter in letters and not _NEGATED_AFTER.match(body[m.end():]) \
                and not _NEGATED_BEFORE.search(body[: m.start()]):
            named.add(letter)
    return named.pop() if len(named) == 1 else None


def _single_text(body: str, letters: str, texts: list[str]) -> str | None:
    """The one option whose text the output contains (whole words); matches inside a longer option's match drop."""
    hay = _normal(body)
    spans: list[tuple[int, int, int]] = []  # (start, end, option index)
    for i, t in enumerate(texts):
        core = _ARTICLE.sub("", t)
        if core:
            spans += [(m.start(), m.end(), i) for m in re.finditer(r"(?<!\w)" + re.escape(core) + r"(?!\w)", hay)]
    kept = {i for s, e, i in spans if not any(s2 <= s and e <= e2 and (e2 - s2) > (e - s) for s2, e2, _ in spans)}
    kept = {i for i in kept if not _negated_text(hay, texts[i])}
    return letters[kept.pop()] if len(kept) == 1 else None


# --------------------------------------------------------------------------------------------- primitives

def _named_at(body: str, pos: int, letters: str, texts: list[str]) -> str | None:
    """The option named right at `pos` (after a cue): a letter token, else an option's text."""
    return _letter_at(body, pos, letters, cue=True, texts=texts) or _text_at(body, pos, letters, texts)


def _letter_at(body: str, pos: int, letters: str, cue: bool, texts: list[str]) -> str | None:
    m = _TOKEN.match(body, pos)
    if not m:
        return None
    bracketed = m.group(1) or m.group(2)
    letter = bracketed or m.group(3)
    if letter.upper() not in letters:
        return None
    if bracketed or _bare_letter_ok(letter, body[m.end():], cue, texts):
        return letter.upper()
    return None


def _bare_letter_ok(letter: str, rest: str, cue: bool, texts: list[str]) -> bool:
    """A bare letter names an option when punctuated ("B.", "d)", "B:"), alone at the end of a line, or
    (upper case) followed by more words: after a cue any such letter, at the start all but "A" and "I", which
    open ordinary sentences, unless the words that follow are that option's text ("A red star" for option A)."""
    if not rest.strip() or re.match(r"^[ \t]*(?:[.):,;!?\"'`\]]|\n|-\s)", rest):
        return not re.match(r"^\.\w", rest)  # "a.m." is no letter
    if not letter.isupper():
        return False
    if cue or letter not in "AI":
        return True
    index = string.ascii_uppercase.index(letter)
    return index < len(texts) and bool(texts[index]) and _normal(rest).startswith(_ARTICLE.sub("", texts[index]))


def _text_at(body: str, pos: int, letters: str, texts: list[str]) -> str | None:
    """The option whose text starts at `pos` (articles and quotes ignored); the longest when several do."""
    rest = _ARTICLE.sub("", _normal(body[pos:]).lstrip(" \"'`:(-"))
    best = None
    for i, t in enumerate(texts):
        core = _ARTICLE.sub("", t)
        if core and re.match(re.escape(core) + r"(?!\w)", rest) and (best is None or len(core) > len(texts[best])):
            best = i
    return letters[best] if best is not None else None


def _negated_text(hay: str, text: str) -> bool:
    core = re.escape(_ARTICLE.sub("", text))
    mentions = list(re.finditer(r"(?<!\w)" + core + r"(?!\w)", hay))
    return bool(mentions) and all(
        re.search(r"\b(?:not|n't|no|isn't|rather\s+than|instead\s+of)\s+(?:(?:a|an|the)\s+)?$", hay[: m.start()])
        for m in mentions)


def _normal(text: str) -> str:
    """Lower case, one space between words, no trailing full stop: how option texts are compared."""
    return re.sub(r"\s+", " ", str(text)).strip().lower().rstrip(".!").strip()
