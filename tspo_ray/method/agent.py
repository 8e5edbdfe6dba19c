"""The TSPO temporal agent: the event-aware frame scorer of eq. 3.

    F_e = MLP(LocalWindowAttention(F_f + PE)) + F_f
    S   = cos(F_e, F_t) + cos(F_f, F_t)

Attention is multi-head self-attention restricted to a band of `window` frames around each frame: frame j attends to
frames max(0, j - w/2) ... min(T-1, j - w/2 + w - 1) (6 before, itself and 5 after for w = 12). Window slots past
either end of the video do not exist, so edge rows see fewer frames (the reference fills their logits with -1e6,
which gives them exactly zero weight). There is no output projection: the heads are concatenated.

The band is computed in blocks of B frames: each block's queries meet the B + w - 1 keys its band can reach, in one
batched matmul over every (head, block), and a cached mask keeps the band (and the video's ends). Time and memory
are O(T * (B + w) * D), never a dense T x T matrix: at 1 fps, hour-long videos give T in the thousands.
"""
from __future__ import annotations

import math
from functools import lru_cache
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn

# The value the reference puts on logits outside the window; kept so edge rows match it bit for bit.
MASKED_LOGIT = -1e6


def sinusoidal_positions(num_frames: int, dim: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """Sinusoidal encoding of the normalised positions t / T: [T, D], sin on even and cos on odd channels.

    Computed once in float64 per (T, D, device, dtype) and cached: callers must not modify the result in place.
    """
    return _cached_positions(int(num_frames), int(dim), torch.device(device or "cpu"), dtype)


@lru_cache(maxsize=8)
def _cached_positions(num_frames: int, dim: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    with torch.inference_mode(False):  # a cached tensor made under inference_mode could not be used in training
        return _positions(num_frames, dim).to(device=device, dtype=dtype)


def _positions(num_frames: int, dim: int) -> torch.Tensor:
    pos = torch.arange(num_frames, dtype=torch.float64) / max(num_frames, 1)
    freq = torch.pow(10000.0, -torch.arange(0, dim, 2, dtype=torch.float64) / dim)
    angles = pos[:, None] * freq[None, :]
    pe = torch.zeros(num_frames, dim, dtype=torch.float64)
    pe[:, 0::2] = torch.sin(angles)
    pe[:, 1::2] = torch.cos(angles[:, : dim // 2])
    return pe


def window_offsets(window: int) -> range:
    """Relative positions a frame attends to: -w/2 ... w/2 - 1 (e.g. -6..5 for w = 12)."""
    return range(-(window // 2), window - window // 2)


# Queries per block: large enough for efficient matmuls, small enough that the (B + w - 1) keys per block waste little.
BLOCK = 32


@lru_cache(maxsize=32)
def _outside_band(num_frames: int, window: int, block: int, device: torch.device) -> torch.Tensor:
    """bool [num_blocks, B, B + w - 1]: True where block key slot c is not in row r's window or lies past an end."""
    with torch.inference_mode(False):  # see _cached_positions
        return _band_mask(num_frames, window, block).to(device)


def _band_mask(num_frames: int, window: int, block: int) -> torch.Tensor:
    pad_lo = -window_offsets(window)[0]
    num_blocks = -(-num_frames // block)
    r = torch.arange(block)[:, None]
    c = torch.arange(block + window - 1)[None, :]
    in_band = (c >= r) & (c <= r + window - 1)
    key_pos = torch.arange(num_blocks)[:, None, None] * block + c[None] - pad_lo
    exists = (key_pos >= 0) & (key_pos < num_frames)
    return ~(in_band[None] & exists)


def _packed_band(segments: torch.Tensor, window: int, block: int) -> torch.Tensor:
    """The band mask of several videos packed end to end ([T] segment id per frame): a key outside its query's
    video is masked like a slot past an end, so every video attends only to its own frames."""
    T = segments.shape[0]
    pad_lo = -window_offsets(window)[0]
    num_blocks = -(-T // block)
    r = torch.arange(block, device=segments.device)[:, None]
    c = torch.arange(block + window - 1, device=segments.device)[None, :]
    in_band = (c >= r) & (c <= r + window - 1)
    seg_k = F.pad(segments, (pad_lo, num_blocks * block + window - 1 - pad_lo - T), value=-1)
    seg_k = seg_k.unfold(0, block + window - 1, block)  # [nb, span]
    seg_q = F.pad(segments, (0, num_blocks * block - T), value=-2).view(num_blocks, block)  # padded rows match nothing
    return ~(in_band[None] & (seg_k[:, None, :] == seg_q[:, :, None]))


def _head_major(x: torch.Tensor, heads: int, rows: int, offset: int, extra: int) -> torch.Tensor:
    """[..., T, D] -> one flat [L * H * rows + extra, hd] buffer, zeros but for frame f of each (lead, head) at row
    offset + f of its `rows`: every block's queries (or keys and values) are then a view of it."""
    *lead, T, D = x.shape
    flat = x.new_zeros(math.prod(lead) * heads * rows + extra, D // heads)
    per_head = flat[: flat.shape[0] - extra].view(*lead, heads, rows, D // heads)
    per_head[..., offset: offset + T, :] = x.unflatten(-1, (heads, D // heads)).transpose(-3, -2)
    return flat


def banded_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, window: int,
                     segments: torch.Tensor | None = None) -> torch.Tensor:
    """Multi-head attention of each frame over its window: q, k, v [..., T, D] -> [..., T, D] (heads concatenated).

    segments: [T] video id per frame when several videos are packed along T (see _packed_band).

    q, k and v are each copied once into a head-major buffer with the band's padding built in: a head holds nb2
    blocks of B rows (nb2 * B >= nb * B + w - 1, so a block's reach never leaves its head), so block j's queries are
    rows j*B.. and its keys rows j*B..j*B+B+w-2 of one flat buffer, an unfold view. Both products are then one bmm
    over (lead, head, block) each, without copying key or value blocks; the spare block of each head is computed and
    dropped (its keys are the next head's rows or zeros, finite, and never reach a kept output)."""
    *lead, T, D = q.shape
    hd = D // heads
    block = min(BLOCK, T)
    nb = -(-T // block)
    pad_lo = -window_offsets(window)[0]
    span = block + window - 1
    rows = -(-(nb * block + window - 1) // block) * block  # per head: nb2 blocks
    qb = _head_major(q, heads, rows, 0, 0).view(-1, block, hd)  # [L*H*nb2, B, hd]
    kb = _head_major(k, heads, rows, pad_lo, window - 1).unfold(0, span, block)  # [L*H*nb2, hd, span], a view
    vb = _head_major(v, heads, rows, pad_lo, window - 1).unfold(0, span, block)
    logits = torch.bmm(qb, kb).view(-1, rows // block, block, span)
    outside = _outside_band(T, window, block, q.device) if segments is None else _packed_band(segments, window, block)
    # in place on the product's own output (its backward needs only the inputs): no further [T, H, span] copies
    logits.mul_(1 / math.sqrt(hd))
    logits[:, :nb].masked_fill_(outside, MASKED_LOGIT)
    weights = torch.softmax(logits, dim=-1).view(-1, block, span)
    out = torch.bmm(weights, vb.transpose(1, 2)).view(*lead, heads, rows, hd)[..., :T, :]
    return out.transpose(-3, -2).reshape(*lead, T, D)


def cosine_to_text(x: torch.Tensor, text: torch.Tensor, lengths: list[int] | None = None,
                   eps: float = 1e-8) -> torch.Tensor:
    """F.cosine_similarity(x, text[..., None, :], dim=-1) ([..., T]) as one matrix-vector product and the norms,
    without the [T, D] product tensor; `lengths`: x holds videos packed along T, text one row per video."""
    norms = torch.linalg.vector_norm(x, dim=-1).clamp_min(eps)
    if lengths is None:
        dots = torch.matmul(x, text.unsqueeze(-1)).squeeze(-1)
        return dots / (norms * torch.linalg.vector_norm(text, dim=-1, keepdim=True).clamp_min(eps))
    rows = torch.repeat_interleave(torch.arange(len(lengths), device=x.device), torch.tensor(lengths, device=x.device))
    dots = torch.matmul(x, text.T).gather(-1, rows[:, None]).squeeze(-1)  # [sum T, N]: N <= a batch of questions
    return dots / (norms * torch.linalg.vector_norm(text, dim=-1).clamp_min(eps)[rows])


class TemporalAgent(nn.Module):
    """Scores T candidate frames against a question: forward(frame_features [..., T, D], text_feature [..., D]) -> S [..., T].

    S is returned before the temperature; the policy divides by tau.
    """

    def __init__(self, dim: int, window: int = 12, heads: int = 8, hidden: int | None = None,
                 query_conditioned: bool = False, position_scale: float = 1.0):
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
        # Optional, off by default (TSPO's eq. 3 has no such term): the attended features are modulated by the
        # question before the MLP, h -> h * (1 + g(F_t)) + b(F_t) (FiLM), so that F_e can depend on what is asked.
        # Zero-initialised: an untrained conditioned agent scores exactly like the plain one.
        self.query_conditioned = query_conditioned
        # Optional, 1 by default (the reference adds PE as is): PE is multiplied by this before it is added. The
        # sinusoids of t/T move by well under 1 in norm across a video while two frames' CLIP features differ by
        # 10 or more, so the plain agent learns where things are said much faster than where they are in time.
        if not position_scale > 0:
            raise ValueError(f"position_scale must be > 0, got {position_scale}")
        self.position_scale = float(position_scale)
        if query_conditioned:
            self.film = nn.Linear(dim, 2 * dim)
            nn.init.zeros_(self.film.weight)
            nn.init.zeros_(self.film.bias)

    def enhance(self, frame_features: torch.Tensor, lengths: list[int] | None = None,
                text_feature: torch.Tensor | None = None) -> torch.Tensor:
        """F_e = MLP(LocalWindowAttention(F_f + PE)) + F_f; `lengths`: videos packed along T (see forward);
        `text_feature`: the question, for a query-conditioned agent only."""
        T, dev, dtype = frame_features.shape[-2], frame_features.device, frame_features.dtype
        if lengths is None:
            pe, segments = sinusoidal_positions(T, self.dim, dev, dtype), None
        else:
            pe = torch.cat([sinusoidal_positions(n, self.dim, dev, dtype) for n in lengths])
            segments = torch.repeat_interleave(torch.arange(len(lengths), device=dev),
                                               torch.tensor(lengths, device=dev))
        x = frame_features + (pe if self.position_scale == 1.0 else self.position_scale * pe)
        # q, k and v in one matmul: one pass over x instead of three.
        weight = torch.cat([self.query.weight, self.key.weight, self.value.weight])
        bias = torch.cat([self.query.bias, self.key.bias, self.value.bias])
        q, k, v = F.linear(x, weight, bias).split(self.dim, dim=-1)
        del x
        attended = banded_attention(q, k, v, self.heads, self.window, segments)
        if self.query_conditioned:
            attended = self._modulate(attended, text_feature, lengths)
        first, _, second = self.mlp
        # self.mlp, with the ReLU and the residual in place on fresh outputs (autograd needs neither's input)
        hidden = F.linear(attended, first.weight, first.bias).relu_()
        return F.linear(hidden, second.weight, second.bias).add_(frame_features)

    def forward(self, frame_features: torch.Tensor, text_feature: torch.Tensor,
                lengths: list[int] | None = None) -> torch.Tensor:
        """S [..., T]. With `lengths` (T_1, ..., T_N), frame_features [sum T_i, D] holds N videos end to end and
        text_feature [N, D] their questions: one pass scores them all, each video seeing only its own frames and
        positions (S [sum T_i]; split it by lengths)."""
        if lengths is not None:
            lengths = [int(n) for n in lengths]
            if frame_features.dim() != 2 or sum(lengths) != frame_features.shape[0] or min(lengths, default=0) < 1:
                raise ValueError(f"packed videos of lengths {lengths} need frame_features [{sum(lengths)}, D], "
                                 f"got {list(frame_features.shape)}")
        enhanced = self.enhance(frame_features, lengths, text_feature)
        return cosine_to_text(enhanced, text_feature, lengths) + cosine_to_text(frame_features, text_feature, lengths)

    def _modulate(self, attended: torch.Tensor, text_feature: torch.Tensor | None,
                  lengths: list[int] | None) -> torch.Tensor:
        if text_feature is None:
            raise ValueError("a query-conditioned agent needs the question's text feature")
        text = F.normalize(text_feature, dim=-1)  # the direction of the question, not CLIP's scale
        scale, shift = self.film(text).chunk(2, dim=-1)
        if lengths is not None:  # one question per packed video: repeat its modulation over the video's frames
            counts = torch.tensor(lengths, device=attended.device)
            scale, shift = scale.repeat_interleave(counts, dim=0), shift.repeat_interleave(counts, dim=0)
        else:
            scale, shift = scale.unsqueeze(-2), shift.unsqueeze(-2)
        return attended * (1 + scale) + shift

    def config(self) -> dict:
        out = {"dim": self.dim, "window": self.window, "heads": self.heads, "hidden": self.hidden}
        if self.query_conditioned:  # absent for the plain agent, so its checkpoints read as before
            out["query_conditioned"] = True
        if self.position_scale != 1.0:
            out["position_scale"] = self.position_scale
        return out

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


# --- agent kinds, registered by name (agent.kind) -------------------------------------------------------------------
#
# A kind is a class with the TemporalAgent interface (forward(frame_features, text_feature, lengths=None) -> S,
# config() -> a JSON-able dict that rebuilds it, `dim`). `eq3`, the reference's layout, is the default; a checkpoint
# whose agent config has no "kind" is one of it. Other kinds add "kind" to their config.

#: name -> agent class
AGENT_KINDS: dict[str, type[nn.Module]] = {}
DEFAULT_KIND = "eq3"


def register_agent(name: str):
    """Class decorator: make an agent class buildable by name (agent.kind, the checkpoint's agent config)."""
    def add(cls):
        if name in AGENT_KINDS and AGENT_KINDS[name] is not cls:
            raise ValueError(f"agent kind {name!r} is registered already ({AGENT_KINDS[name].__name__})")
        AGENT_KINDS[name] = cls
        cls.kind = name
        return cls
    return add


register_agent(DEFAULT_KIND)(TemporalAgent)
