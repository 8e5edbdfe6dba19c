"""The package's layering contract: lower layers never import higher ones, no module imports another in a circle,
the method is pure tensor code, and scripts import the installed package.

Every import statement counts, the ones inside functions included: a lazy import still ties the layers together.
The layers, lowest first (docs/layout.md draws them); units of one layer do not import each other.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "tspo_ray"

LAYERS: list[set[str]] = [
    {"safe_files", "settings", "registry", "ray_internals", "threads"},
    {"method"},
    {"data", "video", "checkpoint"},
    {"config"},
    {"synthetic", "splits", "selector"},
    {"answerers", "export", "lmms_eval_model"},
    {"evaluation"},
    {"training"},
    {"distributed", "serve"},
    {"config_reference"},
]
#: third-party packages the method may not import: it is pure tensor code
METHOD_FORBIDDEN = ("ray", "vllm", "transformers", "open_clip", "mlflow", "decord", "av", "safetensors")


def module_name(path: Path, base: Path = ROOT) -> str:
    parts = path.relative_to(base).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, package_modules: set[str], base: Path = ROOT) -> list[tuple[int, str]]:
    """(line, module) of every import in a file: tspo_ray modules resolved to the module (a name imported from a
    package that is itself a module counts as that module), other packages by their top-level name."""
    tree = ast.parse(path.read_text(), filename=str(path))
    here = module_name(path, base)
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                pkg = here.split(".") if path.name == "__init__.py" else here.split(".")[:-1]
                base = ".".join(pkg[: len(pkg) - node.level + 1] + ([base] if base else []))
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                out.append((node.lineno, sub if sub in package_modules else base))
    return out


def unit_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "tspo_ray" and len(parts) > 1 else None


def rank_of(unit: str) -> int:
    for i, layer in enumerate(LAYERS):
        if unit in layer:
            return i
    raise AssertionError(f"tspo_ray.{unit} is in no layer of tests/test_layers.py; give it one")


def package_graph(root: Path = PACKAGE) -> dict[str, list[tuple[int, str]]]:
    files = [p for p in root.rglob("*.py") if "assets" not in p.parts]
    modules = {module_name(p, root.parent) for p in files}
    return {module_name(p, root.parent): [(n, m) for n, m in imports_of(p, modules, root.parent)
                                          if m.split(".")[0] == "tspo_ray"] for p in files}


def layer_violations(graph) -> list[str]:
    bad = []
    for mod, deps in graph.items():
        unit = unit_of(mod)
        if unit is None:  # tspo_ray/__init__.py: the public names, imported lazily
            continue
        for line, dep in deps:
            dep_unit = unit_of(dep)
            if dep_unit is None or dep_unit == unit:
                continue
            if rank_of(dep_unit) >= rank_of(unit):
                bad.append(f"{mod} (line {line}) imports {dep}: tspo_ray.{unit} (layer {rank_of(unit)}) may only "
                           f"import lower layers, and tspo_ray.{dep_unit} is layer {rank_of(dep_unit)}")
    return bad


def import_cycles(graph) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), over every import."""
    edges = {m: sorted({d for _, d in deps if d in graph and d != m}) for m, deps in graph.items()}
    index, low, stack, on_stack, cycles, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in edges:
        if v not in index:
            visit(v)
    return cycles


def method_third_party(root: Path = PACKAGE) -> list[str]:
    bad = []
    for path in (root / "method").rglob("*.py"):
        for line, dep in imports_of(path, set(), root.parent):
            if dep.split(".")[0] in METHOD_FORBIDDEN:
                bad.append(f"{module_name(path, root.parent)} (line {line}) imports {dep}")
    return bad


def test_lower_layers_never_import_higher_ones():
    violations = layer_violations(package_graph())
    assert not violations, "\n".join(violations)


def test_no_module_imports_another_in_a_circle():
    cycles = import_cycles(package_graph())
    assert not cycles, "import circles: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_the_method_is_pure_tensor_code():
    assert not method_third_party(), "\n".join(method_third_party())


def test_every_unit_has_a_layer():
    units = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir()
             if (p.suffix == ".py" and p.stem != "__init__") or (p.is_dir() and (p / "__init__.py").exists())}
    for unit in units:
        rank_of(unit)


def test_scripts_import_the_installed_package():
    scripts = [p for d in ("jobs", "pipelines", "benchmarks") for p in (ROOT / d).glob("*.py")]
    edits = [f"{p.relative_to(ROOT)}:{n}" for p in scripts for n, line in enumerate(p.read_text().splitlines(), 1)
             if SYS_PATH_EDIT.search(line)]
    assert not edits, f"scripts edit sys.path: {edits}"
    # and they never import each other
    names = {p.stem for p in scripts}
    cross = [f"{p.relative_to(ROOT)} imports {m}" for p in scripts for _, m in imports_of(p, set())
             if m.split(".")[0] in names or m.split(".")[0] in ("jobs", "pipelines", "benchmarks")]
    assert not cross, cross


SYS_PATH_EDIT = re.compile(r"sys\.path\.(insert|append)|sys\.path\s*[+]?=")


def layout_problems_of_tests(tests: Path = ROOT / "tests") -> list[str]:
    """What the tests' layout forbids: a test module importing another test module or a script by name (shared code
    lives in tests/helpers, scripts load by path through helpers.scripts), and an edit of sys.path."""
    files = sorted(tests.rglob("*.py"))
    test_modules = {p.stem for p in files if p.stem.startswith("test_") or p.stem == "conftest"}
    scripts = {p.stem for d in ("jobs", "pipelines") for p in (tests.parent / d).glob("*.py")}
    problems = []
    for p in files:
        rel = p.relative_to(tests.parent)
        for n, line in enumerate(p.read_text().splitlines(), 1):
            if SYS_PATH_EDIT.search(line):
                problems.append(f"{rel}:{n} edits sys.path")
        for n, module in imports_of(p, set(), tests.parent):
            top = module.split(".")
            if top[0] == "tests" or top[-1] in test_modules or top[0] in scripts:
                problems.append(f"{rel}:{n} imports {module}")
    return problems


def test_tests_import_helpers_not_each_other_and_leave_sys_path_alone():
    assert not layout_problems_of_tests(), "\n".join(layout_problems_of_tests())


def test_the_tests_layout_check_finds_each_kind_of_problem(tmp_path):
    tests = tmp_path / "tests"
    (tmp_path / "jobs").mkdir()
    (tmp_path / "jobs" / "train.py").write_text("")
    (tests / "helpers").mkdir(parents=True)
    (tests / "helpers" / "x.py").write_text("X = 1\n")
    (tests / "test_a.py").write_text("from helpers.x import X\n")
    edit = "sys.path" + ".insert(0, 'jobs')"  # spelt apart so this file does not hold the edit it looks for
    (tests / "test_b.py").write_text(f"import sys\n{edit}\nfrom test_a import X\n"
                                     "def f():\n    from tests.test_a import X\n    import train\n")
    assert layout_problems_of_tests(tests) == ["tests/test_b.py:2 edits sys.path", "tests/test_b.py:3 imports test_a",
                                         "tests/test_b.py:5 imports tests.test_a", "tests/test_b.py:6 imports train"]


def write_package(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        p = root / "tspo_ray" / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return root / "tspo_ray"


@pytest.mark.parametrize("bad_import, found", [
    ("from tspo_ray.training.trainer import x", "tspo_ray.method.sampling (line 1) imports tspo_ray.training.trainer"),
    ("def f():\n    from tspo_ray.config import Config", "tspo_ray.method.sampling (line 2) imports tspo_ray.config"),
])
def test_the_contract_fails_on_a_wrong_import(tmp_path, bad_import, found):
    """A lower layer importing a higher one, at module level or inside a function, is caught and named."""
    pkg = write_package(tmp_path, {"__init__.py": "", "method/__init__.py": "", "method/sampling.py": bad_import,
                                   "training/__init__.py": "", "training/trainer.py": "x = 1", "config.py": ""})
    violations = layer_violations(package_graph(pkg))
    assert any(v.startswith(found) for v in violations), violations


def test_the_contract_finds_circles_and_impure_method_code(tmp_path):
    pkg = write_package(tmp_path, {"__init__.py": "", "video/__init__.py": "",
                                   "video/a.py": "from tspo_ray.video import b", "video/b.py": "import tspo_ray.video.a",
                                   "method/__init__.py": "", "method/agent.py": "import ray\nfrom transformers import X"})
    assert import_cycles(package_graph(pkg)) == [["tspo_ray.video.a", "tspo_ray.video.b"]]
    assert method_third_party(pkg) == ["tspo_ray.method.agent (line 1) imports ray",
                                       "tspo_ray.method.agent (line 2) imports transformers"]
