"""Files that never run code when read: tensors in safetensors, everything else as JSON in the file's header.

A payload (nested dicts, lists, tuples, tensors, numpy arrays, numbers, strings) is split into its tensors, stored
as safetensors, and its structure, stored as JSON under the metadata key "tspo_ray" of the same file, so one atomic
rename publishes both. Tuples, non-string dict keys and numpy arrays are tagged in the JSON, so optimizer and RNG
states come back exactly as they were saved. Every file here (tensors, text, JSON lines) is written 0644 via a temp
file, an fsync, a rename and an fsync of its folder (docs/durability.md).
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch

STRUCTURE_KEY = "tspo_ray"
# torch.save writes a zip archive (PK..) or, in its legacy form, a raw pickle (protocol 2+ starts with 0x80)
_PICKLE_MAGIC = (b"PK\x03\x04", b"\x80")


class UnsafeFileError(ValueError):
    """A file that is not safetensors (e.g. a pickle) or not a valid one; the message names it and says what to do."""


class DiskFullError(RuntimeError):
    """A file could not be written because its disk (or quota) is full; the message names the file.

    Deliberately not an OSError: loops that catch OSError to skip one unreadable input (a video, a record) must not
    take a full disk for a bad input and go on marking every following one as failed. It stops the job instead."""

    def __init__(self, path: str | Path, detail: str = ""):
        self.path = Path(path)
        free = _free_bytes(self.path.parent)
        where = f" ({free / 2**20:.1f} MiB free in {self.path.parent})" if free is not None else ""
        super().__init__(f"{self.path}: cannot be written: no space left on the device{where}; "
                         f"the previous version of the file, if any, is unchanged{detail}")


_DISK_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}
# safetensors (Rust) reports an I/O failure as SafetensorError("... IoError(Os { code: 28, kind: StorageFull ..."
_DISK_FULL_WORDS = ("No space left on device", "StorageFull", "QuotaExceeded", "Disk quota exceeded")


def is_disk_full(exc: BaseException) -> bool:
    if isinstance(exc, OSError) and exc.errno in _DISK_FULL_ERRNOS:
        return True
    return any(word in str(exc) for word in _DISK_FULL_WORDS)


def _free_bytes(folder: Path) -> int | None:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def looks_like_safetensors(head: bytes, size: int) -> bool:
    """A safetensors file starts with its JSON header's length (u64, little-endian), then the header's `{`."""
    return len(head) >= 9 and head[8:9] == b"{" and 2 <= int.from_bytes(head[:8], "little") <= size - 8


def looks_like_pickle(path: str | Path) -> bool:
    path = Path(path)
    with open(path, "rb") as fh:
        head = fh.read(9)
    # checked first: a header length whose low byte is 0x80 (1 in 256 files) begins like a raw pickle
    if looks_like_safetensors(head, path.stat().st_size):
        return False
    return any(head.startswith(m) for m in _PICKLE_MAGIC)


# --- payload <-> (JSON structure, tensors) ----------------------------------------------------------------------

def split_payload(obj: Any) -> tuple[Any, dict[str, torch.Tensor]]:
    """(JSON-able structure, tensors by name): the inverse of join_payload."""
    tensors: dict[str, torch.Tensor] = {}

    def enc(x: Any, where: str) -> Any:
        if isinstance(x, torch.Tensor):
            name = f"t{len(tensors)}"
            tensors[name] = x.detach().cpu().contiguous().clone()  # clone: safetensors refuses shared storage
            return {"__tensor__": name}
        if isinstance(x, np.ndarray):
            return {"__ndarray__": x.tolist(), "dtype": str(x.dtype), "shape": list(x.shape)}
        if isinstance(x, np.generic):
            return x.item()
        if isinstance(x, tuple):
            return {"__tuple__": [enc(v, f"{where}[{i}]") for i, v in enumerate(x)]}
        if isinstance(x, list):
            return [enc(v, f"{where}[{i}]") for i, v in enumerate(x)]
        if isinstance(x, dict):
            if all(isinstance(k, str) and not k.startswith("__") for k in x):
                return {k: enc(v, f"{where}.{k}") for k, v in x.items()}
            return {"__items__": [[enc(k, where), enc(v, f"{where}[{k!r}]")] for k, v in x.items()]}
        if x is None or isinstance(x, (bool, int, float, str)):
            return x
        raise TypeError(f"{where}: cannot store a {type(x).__name__} safely (tensors, arrays, numbers, strings, "
                        "lists, tuples and dicts only)")

    return enc(obj, "payload"), tensors


def join_payload(structure: Any, tensors: dict[str, torch.Tensor]) -> Any:
    def dec(x: Any) -> Any:
        if isinstance(x, list):
            return [dec(v) for v in x]
        if not isinstance(x, dict):
            return x
        if "__tensor__" in x:
            return tensors[x["__tensor__"]]
        if "__ndarray__" in x:
            return np.asarray(x["__ndarray__"], dtype=np.dtype(x["dtype"])).reshape(x["shape"])
        if "__tuple__" in x:
            return tuple(dec(v) for v in x["__tuple__"])
        if "__items__" in x:
            return {_hashable(dec(k)): dec(v) for k, v in x["__items__"]}
        return {k: dec(v) for k, v in x.items()}

    return dec(structure)


def _hashable(key: Any) -> Any:
    return tuple(_hashable(k) for k in key) if isinstance(key, (list, tuple)) else key


# --- files ------------------------------------------------------------------------------------------------------

def fsync_file(path: str | Path) -> None:
    """Flush a written file's data to the disk (a rename alone may reach the disk before the data it names)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(folder: str | Path) -> None:
    """Make a folder's entries durable: a rename or a new file in it survives a power loss only once this returns."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:  # a platform without directory descriptors: nothing more can be done
        return
    try:
        os.fsync(fd)
    except OSError as exc:  # some file systems refuse fsync on a folder (EINVAL): their renames are durable already
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


def make_dirs_durable(folder: Path) -> None:
    """mkdir -p, each folder created made durable in its parent."""
    missing = []
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    for f in reversed(missing):
        f.mkdir(exist_ok=True)
        fsync_dir(f.parent)


#: test hook: called with the step's name between the steps of a publication ("written", "synced", "renamed",
#: "published"), so a test can stop a writer at each of them
_step_hook: Callable[[str, Path], None] | None = None


def _step(name: str, path: Path) -> None:
    if _step_hook is not None:
        _step_hook(name, path)


def _publish_atomically(path: str | Path, write: Callable[[str], None]) -> None:
    """Run write(temp path) beside path, then publish it durably: fsync the temp file, rename it into place, fsync
    the folder. Readers see the old file or the whole new one, never a half-written one, and after a power loss the
    name holds either the old file or the whole new one: a pointer written after this returns never names a file
    whose data is not on the disk. A full disk leaves the old file as it was, removes the partial temp file and
    raises DiskFullError naming the file."""
    path = Path(path)
    tmp = None
    try:
        make_dirs_durable(path.parent)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        write(tmp)
        _step("written", path)
        os.chmod(tmp, 0o644)  # mkstemp makes the file private; these files are for every reader
        fsync_file(tmp)
        _step("synced", path)
        os.replace(tmp, path)
        tmp = None
        _step("renamed", path)
        fsync_dir(path.parent)
        _step("published", path)
    except BaseException as exc:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, Exception) and is_disk_full(exc):
            raise DiskFullError(path) from exc
        raise


def write_text_atomic(path: str | Path, text: str) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())

    _publish_atomically(path, write)


def write_jsonl_atomic(path: str | Path, rows: Iterable[dict[str, Any]]) -> None:
    """Write rows as JSON lines via a temp file + rename so readers never see a half-written file."""
    write_text_atomic(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))


def write_tensors_atomic(path: str | Path, tensors: dict[str, torch.Tensor],
                         metadata: dict[str, str] | None = None) -> None:
    """Tensors (and string metadata) as a safetensors file, written to a temp name, made 0644, then renamed."""
    from safetensors.torch import save_file

    cpu = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    _publish_atomically(path, lambda tmp: save_file(cpu, tmp, metadata=metadata))


def read_tensors(path: str | Path, keep: Callable[[str], bool] | None = None
                 ) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, metadata) of a safetensors file (only names `keep` accepts); UnsafeFileError for anything else."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            names = [k for k in fh.keys() if keep is None or keep(k)]
            return {k: fh.get_tensor(k) for k in names}, dict(fh.metadata() or {})
    except (SafetensorError, OSError, ValueError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        kind = "a pickle, which is never loaded because unpickling can run code" if looks_like_pickle(path) \
            else f"not a valid safetensors file ({exc})"
        raise UnsafeFileError(f"{path}: {kind}") from None


def write_payload(path: str | Path, payload: Any) -> None:
    structure, tensors = split_payload(payload)
    write_tensors_atomic(path, tensors, {STRUCTURE_KEY: json.dumps(structure)})


def read_payload(path: str | Path) -> Any:
    tensors, metadata = read_tensors(path)
    if STRUCTURE_KEY not in metadata:
        raise UnsafeFileError(f"{path}: a safetensors file without tspo-ray's structure (metadata {STRUCTURE_KEY!r})")
    try:
        return join_payload(json.loads(metadata[STRUCTURE_KEY]), tensors)
    except (ValueError, KeyError, TypeError) as exc:
        raise UnsafeFileError(f"{path}: its structure does not match its tensors ({exc})") from None


# --- resumable JSON-lines files, and who may write them ---------------------------------------------------------

class SetAsideWarning(UserWarning):
    """Lines of a resumable file that could not be read were moved to a side file (the message names both)."""


def read_jsonl_setting_aside(path: str | Path, accept: Callable[[Any], bool] | None = None) -> list[Any]:
    """The rows of a resumable JSON-lines file. A torn or unreadable line (not JSON, or a value `accept` refuses) is
    never a reason to drop the lines after it: it is appended to `<path>.set-aside` (with its line number), named in a
    SetAsideWarning, and taken out of the file (rewritten durably), so the next append starts on a line of its own.
    The caller holds the file's writer lock."""
    path = Path(path)
    if not path.exists():
        return []
    rows, good, bad = [], [], []
    with open(path, "rb") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                if accept is not None and not accept(row):
                    raise ValueError("not a row of this file")
            except (ValueError, KeyError, TypeError, UnicodeDecodeError):
                bad.append((number, line))
                continue
            rows.append(row)
            good.append(line if line.endswith(b"\n") else line + b"\n")
    if bad:
        side = path.with_name(path.name + ".set-aside")
        with open(side, "ab") as fh:
            for number, line in bad:
                fh.write(f"# {path.name} line {number}\n".encode() + line.rstrip(b"\n") + b"\n")
            fh.flush()
            os.fsync(fh.fileno())
        fsync_dir(side.parent)
        _publish_atomically(path, lambda tmp: _write_bytes(tmp, b"".join(good)))
        warnings.warn(SetAsideWarning(f"{path}: {len(bad)} unreadable line(s) ({', '.join(str(n) for n, _ in bad[:5])}"
                                      f"{'...' if len(bad) > 5 else ''}) set aside in {side}; the "
                                      f"{len(rows)} readable rows are kept"), stacklevel=2)
    return rows


def _write_bytes(tmp: str, data: bytes) -> None:
    with open(tmp, "wb") as fh:
        fh.write(data)


class LockedError(RuntimeError):
    """Another live process holds a writer lock; the message names the lock file and the holder's pid."""


class WriterLock:
    """An exclusive lock on `path` (flock), the holder's pid and host written in it.

    wait=False refuses a second holder with LockedError (a second run on one output folder); wait=True queues behind
    it (short read-modify-write sections of a shared store). The kernel drops the lock when its process dies, so a
    lock file left by a dead process is simply taken over (its pid is only for the message)."""

    def __init__(self, path: str | Path, what: str, wait: bool = False):
        self.path, self.what, self.wait, self._fd = Path(path), what, wait, None

    def __enter__(self) -> "WriterLock":
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if self.wait else fcntl.LOCK_NB))
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "another process"
            os.close(fd)
            raise LockedError(f"{self.what} is in use by {holder} (lock file {self.path}); wait for it to finish, "
                              f"or use another folder") from None
        except BaseException:
            os.close(fd)
            raise
        import socket

        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        self._fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None
