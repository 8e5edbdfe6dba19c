"""Torch's intra-op thread count, set per process by every loop and pipeline that runs torch on a shared machine."""
from __future__ import annotations

import torch


def use_torch_threads(threads: int) -> int:
    """Set torch's intra-op threads to `threads` (0: leave them); the count before. The embedded answerer's small
    tensor operations spin every thread torch has, so the count decides a step's time on a shared machine
    (docs/scaling.md): both training loops set train.torch_threads in each of their processes, and the one-process
    feature path its worker's CPUs."""
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    return before
