"""A resumable position in a shuffled stream of questions: epoch-wise permutations fixed by the seed."""
from __future__ import annotations

import torch


class DataCursor:
    """Hands out batches of item positions; its state (epoch, offset) resumes exactly, mid-epoch included."""

    def __init__(self, num_items: int, seed: int, epoch: int = 0, offset: int = 0):
        if num_items < 1:
            raise ValueError("no training questions")
        self.num_items, self.seed, self.epoch, self.offset = num_items, seed, epoch, offset

    def _order(self, epoch: int) -> list[int]:
        g = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        return torch.randperm(self.num_items, generator=g).tolist()

    def next_batch(self, size: int) -> list[int]:
        out: list[int] = []
        while len(out) < size:
            order = self._order(self.epoch)
            take = order[self.offset : self.offset + size - len(out)]
            out.extend(take)
            self.offset += len(take)
            if self.offset >= self.num_items:
                self.epoch, self.offset = self.epoch + 1, 0
        return out

    def state_dict(self) -> dict:
        return {"num_items": self.num_items, "seed": self.seed, "epoch": self.epoch, "offset": self.offset}

    @classmethod
    def from_state_dict(cls, state: dict) -> "DataCursor":
        return cls(state["num_items"], state["seed"], state["epoch"], state["offset"])
