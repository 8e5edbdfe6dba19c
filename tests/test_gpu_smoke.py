"""benchmarks/gpu_smoke.py on CPU at small sizes: its JSON, its checks passing, and failing on a perturbed result;
and that it imports nothing a bare torch + transformers machine lacks."""
from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

import pytest

from helpers.scripts import load_script

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_smoke.py"
#: what the GPU machine has besides the standard library (numpy comes with transformers)
BARE_MACHINE = {"torch", "transformers", "numpy", "tspo_ray"}


def load_smoke():
    return load_script("benchmarks/gpu_smoke.py")


@pytest.fixture(scope="module")
def smoke():
    return load_smoke()


@pytest.fixture(scope="module")
def small_run(smoke):
    return smoke.run(smoke.parse_args(["--small", "--device", "cpu"]))


def test_the_small_cpu_run_reports_every_part_and_passes(smoke, small_run):
    out = small_run
    assert out["device_type"] == "cpu" and out["ok"], json.dumps(out)[:2000]
    assert [(r["T"], r["dtype"]) for r in out["agent"]] == [(T, d) for T in (16, 64, 200)
                                                              for d in ("float32", "bfloat16")]
    for row in out["agent"]:
        assert row["fwd_bwd_ms"] > 0 and row["check"]["ok"]
        assert set(row["check"]["tol"]) == {"scores", "grads"}
    assert out["clip"]["float32"]["frames_per_s"] > 0 and out["clip"]["bfloat16"]["check"]["ok"]
    step = out["learner_step"]
    assert step["check"]["ok"] and step["weight_moved"] > 0  # the update changed the weights
    assert set(out["selection"]["methods"]) == set(smoke.SELECTION_METHODS)
    for method, row in out["selection"]["methods"].items():
        assert "error" not in row, (method, row)
        assert row["check"]["agreement"] == 1.0  # on CPU the "device" run is the reference itself
    assert len(smoke.all_checks(out)) == 6 + 2 + 1 + len(smoke.SELECTION_METHODS)


def test_a_perturbed_device_result_fails_every_check(smoke):
    args = smoke.parse_args(["--small", "--device", "cpu", "--sizes", "32", "--methods", "agent:top-k", "uniform",
                             "--perturb", "0.5"])
    out = smoke.run(args)
    checks = smoke.all_checks(out)
    assert not out["ok"] and checks and not any(c["ok"] for c in checks), json.dumps(out)[:2000]


def test_main_prints_one_json_line(smoke, capsys, monkeypatch):
    monkeypatch.setattr(smoke, "run", lambda args: {"ok": True, "sizes": args.sizes})
    smoke.main(["--small"])
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 and json.loads(lines[0]) == {"ok": True, "sizes": [16, 64, 200]}


def module_imports(path: Path, top_level_only: bool) -> set[str]:
    """Modules a file imports: all of them, or only those at module level (not inside functions)."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found = set()
    stack = list(nodes)
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
        elif top_level_only and isinstance(node, (ast.If, ast.Try, ast.With)):
            stack.extend(ast.iter_child_nodes(node))
    return found


def module_file(name: str) -> Path | None:
    rel = Path(*name.split("."))
    for candidate in (ROOT / rel.with_suffix(".py"), ROOT / rel / "__init__.py"):
        if candidate.exists():
            return candidate
    return None


def third_party_closure(script: Path) -> set[str]:
    """Top-level names of everything outside the standard library that the script pulls in: its own imports, then
    the module-level imports of every tspo_ray module (and package __init__) they reach."""
    todo, seen, outside = list(module_imports(script, top_level_only=False)), set(), set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        top = name.split(".")[0]
        if top != "tspo_ray":
            if top not in sys.stdlib_module_names:
                outside.add(top)
            continue
        parts = name.split(".")
        for i in range(1, len(parts) + 1):  # the package __init__s on the way are imported too
            path = module_file(".".join(parts[:i]))
            if path is not None:
                todo.extend(module_imports(path, top_level_only=True) - seen)
    return outside


def test_the_smoke_run_needs_only_torch_and_transformers():
    assert third_party_closure(SCRIPT) <= BARE_MACHINE, third_party_closure(SCRIPT)


def test_the_import_check_sees_a_heavy_import_deep_in_the_package(tmp_path):
    """A script reaching tspo_ray.answerers.pool (which imports Ray at module level) is caught."""
    script = tmp_path / "s.py"
    script.write_text("from tspo_ray.answerers.pool import AnswererPool\n")
    assert "ray" in third_party_closure(script)
