import math

import pytest
import torch

from tspo_ray.method.agent import TemporalAgent, banded_attention, dense_window_attention, sinusoidal_positions


def restated_scores(sd, frames, text, window, heads):
    """An independent, loop-by-loop restatement of eq. 3 from the reference's weights."""
    T, D = frames.shape
    hd = D // heads
    pe = torch.zeros(T, D, dtype=torch.float64)
    for t in range(T):
        for i in range(0, D, 2):
            angle = (t / T) / (10000 ** (i / D))
            pe[t, i] = math.sin(angle)
            if i + 1 < D:
                pe[t, i + 1] = math.cos(angle)
    x = frames.double() + pe
    lin = lambda name, v: v @ sd[f"{name}.weight"].double().T + sd[f"{name}.bias"].double()
    q, k, v = (lin(f"selector.temporal.Self_{c}", x) for c in "qkv")
    attended = torch.zeros(T, D, dtype=torch.float64)
    for j in range(T):
        lo, hi = max(0, j - window // 2), min(T - 1, j - window // 2 + window - 1)
        for h in range(heads):
            sl = slice(h * hd, (h + 1) * hd)
            logits = torch.tensor([q[j, sl] @ k[n, sl] / math.sqrt(hd) for n in range(lo, hi + 1)])
            w = torch.softmax(logits, 0)
            attended[j, sl] = sum(w[n - lo] * v[n, sl] for n in range(lo, hi + 1))
    hidden = torch.relu(lin("selector.mlp.0", attended))
    enhanced = lin("selector.mlp.2", hidden) + frames.double()
    cos = lambda a, b: (a @ b) / (a.norm(dim=-1) * b.norm())
    return cos(enhanced, text.double()) + cos(frames.double(), text.double())


def reference_checkpoint(dim, hidden, seed=0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g) * 0.2
    sd = {f"selector.temporal.Self_{c}.{leaf}": r(dim, dim) if leaf == "weight" else r(dim)
          for c in "qkv" for leaf in ("weight", "bias")}
    sd.update({"selector.temporal.ffn_o.weight": r(dim, dim), "selector.temporal.ffn_o.bias": r(dim),
               "selector.mlp.0.weight": r(hidden, dim), "selector.mlp.0.bias": r(hidden),
               "selector.mlp.2.weight": r(dim, hidden), "selector.mlp.2.bias": r(dim),
               # the bundled CLIP's keys are ignored
               "vision_model.embeddings.patch_embedding.weight": r(4, 3, 2, 2), "logit_scale": torch.tensor(1.0)})
    return sd


@pytest.mark.parametrize("T", [1, 5, 12, 13, 40])
def test_agent_matches_independent_restatement(T):
    dim, hidden = 32, 48
    sd = reference_checkpoint(dim, hidden, seed=T)
    agent = TemporalAgent.from_reference_state_dict(sd, window=12)
    g = torch.Generator().manual_seed(100 + T)
    frames, text = torch.randn(T, dim, generator=g), torch.randn(dim, generator=g)
    got = agent(frames, text)
    want = restated_scores(sd, frames, text, window=12, heads=8)
    assert got.shape == (T,)
    torch.testing.assert_close(got.double(), want, atol=1e-4, rtol=0)


def test_window_bounds_are_six_before_and_five_after():
    # One-hot values reveal which frames each row attends to (zero query -> uniform weights over the window).
    T, D = 20, 8
    q = torch.zeros(T, D)
    k = torch.zeros(T, D)
    v = torch.zeros(T, D)
    v[:, 0] = torch.arange(T, dtype=torch.float32)
    out = banded_attention(q, k, v, heads=1, window=12)
    for j in (0, 3, 10, 19):
        lo, hi = max(0, j - 6), min(T - 1, j + 5)
        assert out[j, 0].item() == pytest.approx(sum(range(lo, hi + 1)) / (hi - lo + 1), abs=1e-5)


def test_banded_equals_dense_and_batches():
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(2, 50, 16, generator=g) for _ in range(3))
    band = banded_attention(q, k, v, heads=4, window=12)
    for b in range(2):
        torch.testing.assert_close(band[b], dense_window_attention(q[b], k[b], v[b], 4, 12), atol=1e-5, rtol=1e-5)


def test_reference_round_trip_and_errors():
    sd = reference_checkpoint(16, 24)
    agent = TemporalAgent.from_reference_state_dict(sd)
    assert agent.hidden == 24 and agent.dim == 16
    back = agent.to_reference_state_dict()
    for key, value in back.items():
        assert torch.equal(value, sd[key])
    missing = {k: v for k, v in sd.items() if k != "selector.mlp.2.bias"}
    with pytest.raises(KeyError, match="selector.mlp.2.bias"):
        TemporalAgent.from_reference_state_dict(missing)
    with pytest.raises(KeyError, match="selector.extra"):
        TemporalAgent.from_reference_state_dict({**sd, "selector.extra.weight": torch.zeros(1)})


def test_parameter_count_at_clip_l_width():
    agent = TemporalAgent(768)
    n = sum(p.numel() for p in agent.parameters())
    # q, k, v and a D->D->D MLP; the reference checkpoint's unused ffn_o (590k) brings it to ~3.5M.
    assert n == 3 * (768 * 768 + 768) + 2 * (768 * 768) + 768 + 768
    assert 3.4e6 < n + 768 * 768 + 768 < 3.6e6


def test_positions_are_normalised():
    pe = sinusoidal_positions(4, 6)
    assert pe[0, 0] == 0 and pe[0, 1] == 1
    assert pe[2, 0].item() == pytest.approx(math.sin(0.5))
    assert pe[2, 3].item() == pytest.approx(math.cos(0.5 / 10000 ** (2 / 6)))


def test_every_parameter_gets_gradient():
    agent = TemporalAgent(16, heads=4)
    frames, text = torch.randn(30, 16), torch.randn(16)
    agent(frames, text).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in agent.parameters())


@pytest.mark.parametrize("T,window", [(1, 12), (7, 12), (31, 12), (33, 12), (100, 5), (70, 1), (90, 40), (65, 13)])
def test_blocked_band_equals_dense_in_values_and_gradients(T, window):
    # lengths around the block size (32), windows wider than a block, odd windows, a window of one frame
    g = torch.Generator().manual_seed(T * 100 + window)
    q, k, v = (torch.randn(T, 16, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(3))
    band = banded_attention(q, k, v, heads=2, window=window)
    dense = dense_window_attention(q, k, v, 2, window)
    torch.testing.assert_close(band, dense, atol=1e-10, rtol=0)
    upstream = torch.randn(T, 16, generator=g, dtype=torch.float64)
    grads_band = torch.autograd.grad((band * upstream).sum(), (q, k, v))
    grads_dense = torch.autograd.grad((dense * upstream).sum(), (q, k, v))
    for got, want in zip(grads_band, grads_dense):
        torch.testing.assert_close(got, want, atol=1e-10, rtol=0)


def test_agent_trains_after_scoring_under_inference_mode():
    # the cached positions and band mask are first built under inference_mode, then used with autograd
    torch.manual_seed(3)
    agent = TemporalAgent(16, window=12, heads=4)
    frames, text = torch.randn(45, 16), torch.randn(16)
    with torch.inference_mode():
        before = agent(frames, text)
    scores = agent(frames, text)
    scores.sum().backward()
    torch.testing.assert_close(scores.detach(), before)
    assert agent.query.weight.grad is not None and agent.query.weight.grad.abs().sum() > 0


def test_packed_videos_score_as_one_at_a_time_in_one_forward():
    """Videos of mixed T packed end to end: one forward pass, the scores of scoring each alone (ends, block edges)."""
    from tspo_ray.selector import agent_scores_packed

    torch.manual_seed(5)
    agent = TemporalAgent(32, window=12, heads=8).eval()
    lengths = [1, 5, 12, 31, 32, 33, 127, 300]
    frames = [torch.randn(T, 32) for T in lengths]
    texts = [torch.randn(32) for _ in lengths]
    calls = []
    hook = agent.register_forward_hook(lambda module, inputs, output: calls.append(output.shape))
    packed = agent_scores_packed(agent, frames, texts)
    hook.remove()
    assert calls == [torch.Size([sum(lengths)])]
    with torch.no_grad():
        alone = [agent(f, t) for f, t in zip(frames, texts)]
    for got, want in zip(packed, alone):
        assert got.shape == want.shape
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    # a video's scores do not depend on its neighbours: swapping the order changes nothing
    swapped = agent_scores_packed(agent, frames[::-1], texts[::-1])[::-1]
    for got, want in zip(swapped, alone):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_packed_band_equals_dense_per_video():
    g = torch.Generator().manual_seed(8)
    lengths = [7, 40, 3]
    q, k, v = (torch.randn(sum(lengths), 16, generator=g, dtype=torch.float64) for _ in range(3))
    segments = torch.repeat_interleave(torch.arange(3), torch.tensor(lengths))
    band = banded_attention(q, k, v, heads=2, window=12, segments=segments)
    start = 0
    for n in lengths:
        sl = slice(start, start + n)
        torch.testing.assert_close(band[sl], dense_window_attention(q[sl], k[sl], v[sl], 2, 12), atol=1e-10, rtol=0)
        start += n


def test_packed_lengths_must_cover_the_frames():
    agent = TemporalAgent(16, heads=4)
    with pytest.raises(ValueError, match="lengths"):
        agent(torch.randn(10, 16), torch.randn(2, 16), lengths=[4, 5])
    with pytest.raises(ValueError, match="lengths"):
        agent(torch.randn(10, 16), torch.randn(2, 16), lengths=[10, 0])


def test_the_query_conditioned_option_starts_as_the_plain_agent_and_learns_from_the_question():
    from tspo_ray.method.agent import TemporalAgent

    torch.manual_seed(0)
    plain = TemporalAgent(16, window=4, heads=4)
    cond = TemporalAgent(16, window=4, heads=4, query_conditioned=True)
    cond.load_state_dict({**plain.state_dict(), **{k: v for k, v in cond.state_dict().items() if "film" in k}})
    frames, text = torch.randn(20, 16), torch.randn(16)
    assert torch.equal(plain(frames, text), cond(frames, text))  # zero-initialised modulation: the same scores
    assert plain.config() == {"dim": 16, "window": 4, "heads": 4, "hidden": 16}  # plain checkpoints unchanged
    assert TemporalAgent(**cond.config()).query_conditioned
    cond(frames, text).sum().backward()
    assert cond.film.weight.grad.abs().sum() > 0
    with torch.no_grad():
        cond.film.weight.normal_()
    other = torch.randn(16)
    # now F_e depends on the question: the enhanced frames differ between two questions
    assert not torch.allclose(cond.enhance(frames, text_feature=text), cond.enhance(frames, text_feature=other))
    assert torch.equal(plain.enhance(frames), plain.enhance(frames, text_feature=other))
    # packed videos, one question each, score as one at a time
    f2, t2 = torch.randn(7, 16), torch.randn(16)
    packed = cond(torch.cat([frames, f2]), torch.stack([text, t2]), lengths=[20, 7])
    assert torch.allclose(packed, torch.cat([cond(frames, text), cond(f2, t2)]), atol=1e-5)


def test_position_scale_multiplies_the_position_code_only():
    """F_e with PE x s equals the plain agent's F_e on frames moved by (s - 1) PE, less that move (the residual adds
    the frames themselves, not the positions); s = 1 is the reference and leaves the config as before."""
    torch.manual_seed(0)
    T, D, s = 40, 16, 20.0
    plain = TemporalAgent(D, window=6, heads=4)
    scaled = TemporalAgent(D, window=6, heads=4, position_scale=s)
    scaled.load_state_dict(plain.state_dict())
    frames, text = torch.randn(T, D), torch.randn(D)
    shift = (s - 1) * sinusoidal_positions(T, D)
    with torch.no_grad():
        expected = plain.enhance(frames + shift) - shift
        assert torch.allclose(scaled.enhance(frames), expected, atol=1e-4)
        assert not torch.allclose(scaled(frames, text), plain(frames, text), atol=1e-3)
    assert "position_scale" not in plain.config() and scaled.config()["position_scale"] == s
    rebuilt = TemporalAgent(**scaled.config())  # as a checkpoint's agent_config rebuilds it
    rebuilt.load_state_dict(scaled.state_dict())
    with torch.no_grad():
        assert torch.equal(rebuilt(frames, text), scaled(frames, text))
    with pytest.raises(ValueError, match="position_scale must be > 0"):
        TemporalAgent(D, position_scale=0)
