"""The project's scripts (jobs/, pipelines/) loaded by file path, so a test calls a script's `main` in process
without putting the script folders on sys.path (scripts never import each other; tests do not edit sys.path)."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]


def load_script(relative: str) -> ModuleType:
    """`load_script("jobs/train.py")`: the module, loaded once per test session under a name of its own."""
    path = ROOT / relative
    name = "script_" + relative.removesuffix(".py").replace("/", "_")
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses and pickling resolve the module by name
        spec.loader.exec_module(module)
    return sys.modules[name]
