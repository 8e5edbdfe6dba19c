"""A pool of answerer actors: N Ray actors, each owning one answerer (vLLM, HF or embedded) built where it runs.

`AnswererActorPool.answer(requests)` splits a batch into contiguous chunks, one per idle actor, and returns one
Answer per request in order; `answer_chunks` takes the chunks from the caller (the training pool keeps the G sets
of a question in one chunk). Answers are keyed by AnswerRequest.key: a chunk whose actor died (killed, out of
memory, or exited because its engine died) is resent whole to the next idle actor while a fresh one replaces the
dead, and an answer already held for a key is never replaced or counted again.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import replace
from typing import Any, Callable, Sequence

import ray
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError

from tspo_ray.answerers.base import Answer, AnswerRequest
from tspo_ray.answerers.errors import AnswererDied, AnswerersGaveUp
from tspo_ray.answerers.inputs import dedupe

log = logging.getLogger(__name__)
_DEAD = (RayActorError, ActorDiedError, ActorUnavailableError)
#: Answer.extra key: the answer's share of its call's seconds inside the answerer actor
ACTOR_TIME = "actor_s"


class AnswererActor:
    """Ray actor body: builds its answerer from a zero-argument factory, then answers batches."""

    def __init__(self, factory: Callable[[], Any], torch_threads: int = 0):
        if torch_threads:  # 0: Ray's own setting (OMP_NUM_THREADS from the actor's CPU share)
            import torch

            torch.set_num_threads(torch_threads)
        self.answerer = factory()

    def answer(self, requests: Sequence[AnswerRequest]) -> list[Answer]:
        try:
            t0 = time.perf_counter()
            answers = self.answerer.answer(requests)
            # each answer carries its share of the call's time in this actor, so the caller can tell Ray's
            # delivery (the round trip less this) from the answering (ACTOR_TIME)
            share = (time.perf_counter() - t0) / max(len(answers), 1)
            return [replace(a, extra={**a.extra, ACTOR_TIME: share}) if isinstance(a, Answer) else a
                    for a in answers]
        except AnswererDied:
            # The engine is gone and will not come back in this process: leave, so that the pool replaces us.
            log.exception("answerer engine died; the actor exits")
            ray.actor.exit_actor()

    def name(self) -> str:
        return self.answerer.name

    def stats(self) -> dict[str, Any]:
        return dict(getattr(self.answerer, "stats", {}))

    def pid(self) -> int:
        return os.getpid()

    def node_id(self) -> str:
        return ray.get_runtime_context().get_node_id()


def actor_options(kind: str, settings: dict[str, Any]) -> dict[str, Any]:
    """Ray resources for one actor of an answerer kind, from its settings (vLLM and HF configs carry them)."""
    from tspo_ray.answerers import parse_settings

    parsed = parse_settings(kind, settings)
    return parsed.actor_options() if hasattr(parsed, "actor_options") else {"num_cpus": 1.0, "num_gpus": 0.0}


class AnswererActorPool:
    """N answerer actors that replace themselves when they die; `answer` is idempotent per request key."""

    def __init__(self, factory: Callable[[], Any], num_actors: int = 1, actor_options: dict[str, Any] | None = None,
                 max_restarts: int = 3, max_requests_per_call: int | None = None, slots_per_actor: int = 1,
                 torch_threads: int = 0):
        """`num_actors` answerer slots (engines); with slots_per_actor k > 1 they live k to an actor process, which
        answers k calls at once (the simulated answerer's several GPUs per process). torch_threads > 0 sets each
        actor process's torch intra-op threads."""
        if num_actors < 1:
            raise ValueError(f"num_actors must be >= 1, got {num_actors}")
        if slots_per_actor < 1:
            raise ValueError(f"slots_per_actor must be >= 1, got {slots_per_actor}")
        options = dict(actor_options or {"num_cpus": 1})
        if slots_per_actor > 1:
            options["max_concurrency"] = slots_per_actor
        self._remote = ray.remote(AnswererActor).options(**options)
        self.factory, self.max_restarts, self.max_per_call = factory, max_restarts, max_requests_per_call
        self.torch_threads = torch_threads
        processes = [self._remote.remote(factory, torch_threads) for _ in range(-(-num_actors // slots_per_actor))]
        #: one entry per slot; slot i lives in process i // slots_per_actor
        self.actors = [processes[i // slots_per_actor] for i in range(num_actors)]
        self.restarts = 0
        self.gave_up: str | None = None  # why the pool stopped replacing actors, once it has
        self._replacing = threading.Lock()  # the rollout coordinator calls the pool from several threads

    @classmethod
    def for_kind(cls, kind: str, settings: dict[str, Any], num_actors: int = 1, **kwargs) -> "AnswererActorPool":
        """A pool of `kind` answerers ("vllm", "hf", "embedded") with resources taken from their settings."""
        from tspo_ray.answerers import AnswererFactory

        return cls(AnswererFactory(kind, settings), num_actors, actor_options(kind, settings), **kwargs)

    def processes(self) -> list[Any]:
        """The distinct actor processes behind the slots, in slot order."""
        return list({id(a): a for a in self.actors}.values())

    def ready(self) -> list[str]:
        """Wait until every actor has built its answerer; their names. An actor that failed to start raises here."""
        return ray.get([a.name.remote() for a in self.processes()])

    def stats(self) -> list[dict[str, Any]]:
        """Per actor process."""
        return ray.get([a.stats.remote() for a in self.processes()])

    def _replace(self, slot: int, dead: Any, error: BaseException) -> None:
        """Start a fresh actor in `slot` in place of `dead`; an actor that fails to start is replaced the same way
        (its calls fail like a dead actor's), and every replacement counts against max_restarts."""
        with self._replacing:
            if self.gave_up:
                raise AnswerersGaveUp(self.gave_up)
            if self.actors[slot] is not dead:  # another caller saw the same death and replaced it already
                return
            self.restarts += 1
            if self.restarts > self.max_restarts:
                last = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
                died = "once" if self.restarts == 1 else f"{self.restarts} times"
                self.gave_up = (f"answerer actors died {died}; giving up (max_restarts "
                                f"{self.max_restarts}). Last error: {type(error).__name__}: {last}")
                raise AnswerersGaveUp(self.gave_up) from error
            log.warning("answerer actor %d died (%s); starting a replacement", slot, type(error).__name__)
            try:
                ray.kill(dead)
            except Exception:  # already gone
                pass
            fresh = self._remote.remote(self.factory, self.torch_threads)
            self.actors = [fresh if a is dead else a for a in self.actors]  # every slot of the dead process

    def answer(self, requests: Sequence[AnswerRequest]) -> list[Answer]:
        """One Answer per request, in order; max_requests_per_call (default: an even split over the actors) each."""
        unique = dedupe(requests)
        if not unique:
            return []
        size = self.max_per_call or -(-len(unique) // len(self.actors))
        answers = self.answer_chunks([unique[i : i + size] for i in range(0, len(unique), size)])
        return [answers[r.key] for r in requests]

    def answer_chunks(self, chunks: Sequence[Sequence[AnswerRequest]],
                      slots: Sequence[int] | None = None, steal: bool = False,
                      times: dict[str, float] | None = None) -> dict[str, Answer]:
        """Answers by key, one actor call per chunk. A chunk lost with a dead actor is resent (the actor replaced).

        slots[i] pins chunk i to actor slots[i] % N (e.g. by video, so each actor's frame cache holds its own
        videos); unpinned chunks go to whichever actor is idle. With `steal`, a pin is a preference: an idle actor
        with nothing of its own takes a chunk pinned to a busy one, so collisions of the pins never serialise calls.

        `times`, when given, receives where the calls' time went outside the actors: pool_submit_s (choosing
        actors and sending the calls), pool_delivery_s (summed over the calls: round trip less the actor's own
        time, i.e. Ray carrying the call and its answers and the caller noticing), pool_calls."""
        if self.gave_up:
            raise AnswerersGaveUp(self.gave_up)
        results: dict[str, Answer] = {}
        pins = [None if slots is None else slots[i] % len(self.actors) for i in range(len(chunks))]
        queue = [(chunk, pin) for chunk, pin in zip(chunks, pins) if chunk]
        pending: dict[Any, tuple[int, Any, Sequence[AnswerRequest], int | None]] = {}  # future -> slot, actor, ...
        sent: dict[Any, float] = {}  # future -> when it was sent
        submit_s = delivery_s = 0.0
        calls = 0
        while queue or pending:
            t_submit = time.perf_counter()
            busy = {slot for slot, _, _, _ in pending.values()}
            # first every actor takes its own (or unpinned) work; then, with `steal`, the idle ones take chunks
            # pinned to busy actors (a sweep of its own, so an actor early in the order is not passed over)
            for stealing in (False, True) if steal else (False,):
                for slot, actor in enumerate(self.actors):
                    if slot in busy:
                        continue
                    mine = (None, slot)
                    pick = next((i for i, (_, pin) in enumerate(queue) if (pin in busy if stealing else pin in mine)),
                                None)
                    if pick is None:
                        continue
                    chunk, pin = queue.pop(pick)
                    future = actor.answer.remote(list(chunk))
                    pending[future], sent[future] = (slot, actor, chunk, pin), time.perf_counter()
                    busy.add(slot)
            submit_s += time.perf_counter() - t_submit
            done, _ = ray.wait(list(pending), num_returns=1)
            slot, actor, chunk, pin = pending.pop(done[0])
            try:
                answers = ray.get(done[0])
            except _DEAD as exc:
                self._replace(slot, actor, exc)
                queue.insert(0, (chunk, pin))
                continue
            calls += 1
            in_actor = sum(float(a.extra.get(ACTOR_TIME, 0.0)) for a in answers)
            delivery_s += max(time.perf_counter() - sent.pop(done[0]) - in_actor, 0.0)
            for answer in answers:
                results.setdefault(answer.key, answer)
        if times is not None:
            times.update(pool_submit_s=submit_s, pool_delivery_s=delivery_s, pool_calls=float(calls))
        return results

    def shutdown(self) -> None:
        for actor in self.processes():
            ray.kill(actor)
        self.actors = []
