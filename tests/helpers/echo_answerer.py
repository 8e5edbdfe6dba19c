"""A stand-in answerer for the actor-pool tests: the pool is generic over answerers, and a real engine cannot be made
to die on cue here. Ray workers import it by module name (`helpers.echo_answerer`)."""
from __future__ import annotations

import os
from pathlib import Path

from tspo_ray.answerers.base import Answer
from tspo_ray.answerers.errors import AnswererDied


class EchoAnswerer:
    """Answers "<key>@<pid>" with option A for even set numbers ("q#4"), B for odd; raises AnswererDied once
    (marker file) when a batch holds `die_on`."""

    name = "echo"

    def __init__(self, workdir: str, die_on: str | None = None, die_always: bool = False):
        self.workdir, self.die_on, self.die_always = Path(workdir), die_on, die_always
        try:  # an actor that fails to start (once per marker): e.g. its engine finds no free GPU memory
            (self.workdir / "fail-next-start").unlink()
        except FileNotFoundError:
            pass
        else:
            raise RuntimeError("engine did not start")
        self.stats = {"generate_calls": 0, "requests": 0}

    def answer(self, requests):
        keys = [r.key for r in requests]
        marker = self.workdir / "died"
        if self.die_on in keys and (self.die_always or not marker.exists()):
            marker.touch()
            raise AnswererDied("engine gone")
        self.stats["generate_calls"] += 1
        self.stats["requests"] += len(requests)
        with open(self.workdir / "answered.txt", "a") as fh:
            fh.writelines(f"{k}\n" for k in keys)
        return [Answer(k, f"{k}@{os.getpid()}", "AB"[int(k.split("#")[1].split(":")[0]) % 2]) for k in keys]

