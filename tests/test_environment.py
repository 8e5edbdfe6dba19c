"""The environment stays put: `uv run` installs nothing once synced, and a local Ray's workers run this interpreter."""
import os
import shutil
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def installed_distributions() -> dict[str, tuple[int, int]]:
    """Every *.dist-info folder of this environment with its inode and mtime: a reinstall of the same version
    writes a new folder, so it shows up even when the version does not change."""
    site = Path(sysconfig.get_paths()["purelib"])
    out = {}
    for dist in sorted(site.glob("*.dist-info")):
        st = dist.stat()
        out[dist.name] = (st.st_ino, st.st_mtime_ns)
    return out


def test_uv_run_installs_nothing_on_later_runs(run_process):
    uv = shutil.which("uv")
    if uv is None:
        pytest.skip("uv is not on PATH, so `uv run` cannot be checked here")
    if Path(sys.prefix).resolve() != (ROOT / ".venv").resolve():
        pytest.skip(f"the tests do not run in the project's .venv ({sys.prefix}), the one `uv run` would sync")
    # Flags that would make `uv run` skip its sync would hide exactly what is checked here.
    env = {k: v for k, v in os.environ.items() if k not in ("UV_NO_SYNC", "UV_FROZEN", "UV_LOCKED", "VIRTUAL_ENV")}
    runs = []
    before = installed_distributions()
    for _ in range(2):
        done = run_process([uv, "run", "python", "-c", "pass"], env=env, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        runs.append(done.stderr)
    after = installed_distributions()
    changed = sorted(set(before.items()) ^ set(after.items()))
    assert not changed, f"`uv run` changed the environment: {changed[:10]}\n{runs[-1][-2000:]}"
    assert before, "found no installed distributions at all: the check would prove nothing"


def test_local_ray_workers_run_the_drivers_interpreter(ray_local):
    @ray_local.remote(num_cpus=0)
    def worker_interpreter() -> tuple[str, str]:
        import sys as worker_sys

        return worker_sys.executable, worker_sys.prefix

    executable, prefix = ray_local.get(worker_interpreter.remote(), timeout=120)
    # Ray's uv hook would run the worker from a per-cluster environment under the session's temp folder.
    assert Path(prefix).resolve() == Path(sys.prefix).resolve(), (executable, prefix)
    assert Path(executable).resolve() == Path(sys.executable).resolve()


def test_a_private_local_ray_leaves_no_session_folder_behind(tmp_path, run_process):
    script = tmp_path / "start.py"
    script.write_text(
        "from tspo_ray.distributed import init_ray\n"
        "ray = init_ray('local', num_cpus=1, include_dashboard=False, log_to_driver=False)\n"
        "print(ray._private.worker._global_node.get_session_dir_path())\n")
    done = run_process([sys.executable, script], timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-2000:]
    session = Path(done.stdout.strip().splitlines()[-1])
    assert session.name.startswith("session_") and not session.exists()
