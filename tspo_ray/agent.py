"""The TSPO temporal agent: the event-aware frame scorer of eq. 3.

    F_e = MLP(LocalWindowAttention(F_f + PE)) + F_f
    S   = cos(F_e, F_t) + cos(F_f, F_t)

Attention is multi-head self-attention restricted to a band of `window` frames around each frame: frame j attends to
frames max(0, j - w/2) ... min(T-1, j - w/2 + w - 1) (6 before, itself and 5 after for w = 12). Window slots past
either end of the video do not exist, so edge rows see fewer frames (the reference fills their logits with -1e6,
which gives them exactly zero weight). There is no output projection: the heads are concatenated.

The band is computed offset by offset (one [T, D] product per offset), so time and memory are O(T * w * D), never a
dense T x T matrix: at 1 fps, hour-long videos give T in the thousands.
"""
from __future__ import annotations

import math
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn

# The value the reference puts on logits outside the window; kept so edge rows match it bit for bit.
MASKED_LOGIT = -1e6


def sinusoidal_positions(num_frames: int, dim: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """Sinusoidal encoding of the normalised positions t / T: [T, D], sin on even and cos on odd channels."""
    pos = torch.arange(num_frames, device=device, dtype=torch.float64) / max(num_frames, 1)
    freq = torch.pow(10000.0, -torch.arange(0, dim, 2, device=device, dtype=torch.float64) / dim)
    angles = pos[:, None] * freq[None, :]
    pe = torch.zeros(num_frames, dim, device=device, dtype=torch.float64)
    pe[:, 0::2] = torch.sin(angles)
    pe[:, 1::2] = torch.cos(angles[:, : dim // 2])
    return pe.to(dtype)


def window_offsets(window: int) -> range:
    """Relative positions a frame attends to: -w/2 ... w/2 - 1 (e.g. -6..5 for w = 12)."""
    return range(-(window // 2), window - window // 2)


def banded_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, window: int) -> torch.Tensor:
    """Multi-head attention of each frame over its window: q, k, v [..., T, D] -> [..., T, D] (heads concatenated)."""
    *lead, T, D = q.shape
    hd = D // heads
    offsets = window_offsets(window)
    pad_lo, pad_hi = -offsets[0], offsets[-1]
    # Pad the time axis once so that every offset is a slice (a view), not a gather.
    k_pad = F.pad(k, (0, 0, pad_lo, pad_hi))
    v_pad = F.pad(v, (0, 0, pad_lo, pad_hi))
    qh = q.reshape(*lead, T, heads, hd)
    positions = torch.arange(T, device=q.device)
    logits = []
    for o in offsets:
        k_o = k_pad[..., pad_lo + o : pad_lo + o + T, :].reshape(*lead, T, heads, hd)
        logit = (qh * k_o).sum(-1) / math.sqrt(hd)  # [..., T, H]
        outside = (positions + o < 0) | (positions + o >= T)
        logits.append(logit.masked_fill(outside[:, None], MASKED_LOGIT))
    weights = torch.softmax(torch.stack(logits, dim=-1), dim=-1)  # [..., T, H, w]
    out = torch.zeros_like(qh)
    for slot, o in enumerate(offsets):
        v_o = v_pad[..., pad_lo + o : pad_lo + o + T, :].reshape(*lead, T, heads, hd)
        out = out + weights[..., slot, None] * v_o
    return out.reshape(*lead, T, D)


class TemporalAgent(nn.Module):
    """Scores T candidate frames against a question: forward(frame_features [..., T, D], text_feature [..., D]) -> S [..., T].

    S is returned before the temperature; the policy divides by tau.
    """

    def __init__(self, dim: int, window: int = 12, heads: int = 8, hidden: int | None = None):
        super().__init__()
        if dim % heads:
            raise ValueError(f"feature dim {dim} is not divisible by heads={heads}")
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self.dim, self.window, self.heads = dim, window, heads
        self.hidden = hidden or dim
        self.query = nn.Linear(dim, dim)
        self.key = nn.Linear(dim, dim)
        self.value = nn.Linear(dim, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, self.hidden), nn.ReLU(), nn.Linear(self.hidden, dim))

    def enhance(self, frame_features: torch.Tensor) -> torch.Tensor:
        """F_e = MLP(LocalWindowAttention(F_f + PE)) + F_f."""
        T = frame_features.shape[-2]
        x = frame_features + sinusoidal_positions(T, self.dim, frame_features.device, frame_features.dtype)
        attended = banded_attention(self.query(x), self.key(x), self.value(x), self.heads, self.window)
        return self.mlp(attended) + frame_features

    def forward(self, frame_features: torch.Tensor, text_feature: torch.Tensor) -> torch.Tensor:
        text = text_feature.unsqueeze(-2)
        enhanced = self.enhance(frame_features)
        return F.cosine_similarity(enhanced, text, dim=-1) + F.cosine_similarity(frame_features, text, dim=-1)

    def config(self) -> dict:
        return {"dim": self.dim, "window": self.window, "heads": self.heads, "hidden": self.hidden}

    # --- the published TSPO-0.4B layout -------------------------------------------------------------------------
    _REFERENCE_KEYS = {
        "selector.temporal.Self_q": "query",
        "selector.temporal.Self_k": "key",
        "selector.temporal.Self_v": "value",
        "selector.mlp.0": "mlp.0",
        "selector.mlp.2": "mlp.2",
    }

    @classmethod
    def from_reference_state_dict(
        cls, state_dict: Mapping[str, torch.Tensor], window: int = 12, heads: int = 8
    ) -> "TemporalAgent":
        """Build an agent from a TSPO-0.4B checkpoint's state dict.

        Keys outside `selector.` are the bundled CLIP and are ignored; `selector.temporal.ffn_o.*` exists in the
        checkpoint but the reference forward pass never uses it, so it is ignored too.
        """
        ours: dict[str, torch.Tensor] = {}
        for ref_prefix, our_prefix in cls._REFERENCE_KEYS.items():
            for leaf in ("weight", "bias"):
                key = f"{ref_prefix}.{leaf}"
                if key not in state_dict:
                    raise KeyError(f"reference checkpoint is missing {key!r}")
                ours[f"{our_prefix}.{leaf}"] = state_dict[key]
        unexpected = [
            k for k in state_dict
            if k.startswith("selector.")
            and not k.startswith("selector.temporal.ffn_o.")
            and k.rsplit(".", 1)[0] not in cls._REFERENCE_KEYS
        ]
        if unexpected:
            raise KeyError(f"reference checkpoint has selector keys this agent does not know: {unexpected[:5]}")
        dim = ours["query.weight"].shape[0]
        hidden = ours["mlp.0.weight"].shape[0]
        agent = cls(dim, window=window, heads=heads, hidden=hidden)
        agent.load_state_dict({k: v.float() for k, v in ours.items()})
        return agent

    def to_reference_state_dict(self) -> dict[str, torch.Tensor]:
        """The inverse of from_reference_state_dict (without the unused ffn_o)."""
        sd = self.state_dict()
        return {
            f"{ref}.{leaf}": sd[f"{ours}.{leaf}"].clone()
            for ref, ours in self._REFERENCE_KEYS.items()
            for leaf in ("weight", "bias")
        }


def dense_window_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, window: int) -> torch.Tensor:
    """The same attention with a dense T x T mask, as the reference computes it. O(T^2): for checks and benchmarks."""
    T, D = q.shape[-2:]
    hd = D // heads
    j = torch.arange(T, device=q.device)
    lo = (j - window // 2).clamp(min=0)
    hi = (j - window // 2 + window - 1).clamp(max=T - 1)
    inside = (j[None, :] >= lo[:, None]) & (j[None, :] <= hi[:, None])
    qh = q.reshape(*q.shape[:-1], heads, hd).transpose(-3, -2)
    kh = k.reshape(*k.shape[:-1], heads, hd).transpose(-3, -2)
    vh = v.reshape(*v.shape[:-1], heads, hd).transpose(-3, -2)
    logits = (qh @ kh.transpose(-1, -2)) / math.sqrt(hd)
    weights = torch.softmax(logits.masked_fill(~inside, MASKED_LOGIT), dim=-1)
    return (weights @ vh).transpose(-3, -2).reshape(q.shape)
