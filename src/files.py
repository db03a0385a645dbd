"""Writing files so that no failure leaves a half-written one: the one place every file the project writes goes through.

Checkpoints, resume state, run records, exported models and dataset statistics are all written by `write_atomically`:
the bytes go to a temporary file beside the target, are flushed to disk, and only then renamed over the target
(`os.replace` is atomic on one file system). A crash, a kill or a full disk at any moment leaves either the old file or
the new one, never a truncated one, and a failed write removes its temporary file.

Objects are serialized in memory first: torch's own writer, given a path on a full disk, raises an unhelpful
RuntimeError (torch.save) or aborts the whole process (ScriptModule.save, a C++ exception in a destructor; seen with
torch 2.14.1 on a 1 MB tmpfs). Python's file writes fail with a plain OSError instead.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import shutil
import warnings
from pathlib import Path

import torch

# What an OSError's errno means for someone who wanted to save a file, and what to do about it.
_PROBLEMS = {
    errno.ENOSPC: "the disk is full: free some space there, or save somewhere else",
    errno.EDQUOT: "the disk quota is used up: free some space there, or save somewhere else",
    errno.EACCES: "no permission to write there: save somewhere you can write, or fix the folder's permissions",
    errno.EPERM: "no permission to write there: save somewhere you can write, or fix the folder's permissions",
    errno.EROFS: "the file system is read-only: save somewhere else",
    errno.ENOTDIR: "part of that path is a file, not a folder: choose another path",
    errno.EEXIST: "part of that path is a file, not a folder: choose another path",  # from mkdir
    errno.EISDIR: "that path is a folder: give a file name",
}


class WriteError(RuntimeError):
    """A file could not be written. The message is one line naming the file, the folder's problem and the fix."""


def describe_write_error(what: str, err: OSError) -> str:
    """One line for a failed write: 'Cannot write /abs/x.pt: the disk is full: free some space ...'."""
    problem = _PROBLEMS.get(err.errno or 0, f"{err.strerror or err}")
    return f"Cannot write {what}: {problem}."


def temp_path(path: Path) -> Path:
    """The temporary file `write_atomically` uses for `path`: a hidden name in the same folder (same file system)."""
    return path.with_name(f".{path.name}.tmp")


def write_atomically(path: str | Path, data: bytes | memoryview) -> Path:
    """Write `data` to `path` all or nothing (temp file, fsync, os.replace); returns path.

    Raises WriteError (one line) on any OSError; the target is then unchanged and no temporary file is left.
    """
    try:
        return _write(Path(path), data)
    except OSError as err:
        raise WriteError(describe_write_error(str(Path(path).absolute()), err)) from None


def _write(path: Path, data: bytes | memoryview) -> Path:
    tmp = temp_path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_dir():
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
        tmp.unlink(missing_ok=True)  # a leftover of a killed run: free its space before writing again
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())  # the bytes are on disk before the rename makes them the file
        os.replace(tmp, path)
    except BaseException:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        raise
    return path


def remove_file(path: str | Path) -> None:
    """Delete the file at `path` if there is one (a folder there is left alone); WriteError (one line) when it cannot
    be deleted."""
    try:
        if not Path(path).is_dir():
            Path(path).unlink(missing_ok=True)
    except OSError as err:
        raise WriteError(describe_write_error(str(Path(path).absolute()), err)) from None


def save_torch(obj: object, path: str | Path) -> Path:
    """torch.save `obj` (a state dict, a resume state) to `path` atomically; see write_atomically."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return write_atomically(path, buffer.getbuffer())


@contextlib.contextmanager
def quiet_torchscript():
    """Silence torch's "torch.jit.script/load is deprecated" warning (a FutureWarning in torch 2.14, a
    DeprecationWarning in 2.11): TorchScript still works, and it is the format that loads without this project's
    code. Other warnings still show."""
    with warnings.catch_warnings():
        for category in (FutureWarning, DeprecationWarning):
            warnings.filterwarnings("ignore", message=r"`torch\.jit\.\w+` is deprecated", category=category)
        yield


def save_script(module: torch.jit.ScriptModule, path: str | Path) -> Path:
    """Save a TorchScript module to `path` atomically; see write_atomically."""
    buffer = io.BytesIO()
    with quiet_torchscript():
        torch.jit.save(module, buffer)
    return write_atomically(path, buffer.getbuffer())


def save_json(obj: object, path: str | Path) -> Path:
    """Write `obj` as indented JSON to `path` atomically; see write_atomically."""
    return write_atomically(path, json.dumps(obj, indent=1, ensure_ascii=False).encode("utf-8"))


def check_writable(folder: str | Path, need_bytes: int = 0) -> Path:
    """Make sure files can be written in `folder` (created if missing) and that it has `need_bytes` free.

    Writes and removes a small probe file. Raises WriteError with one line naming the folder otherwise.
    """
    folder = Path(folder)
    try:
        _write(folder / f".write_test-{os.getpid()}", b"probe").unlink()  # per process: two runs may check at once
    except OSError as err:
        raise WriteError(describe_write_error(f"in {folder.absolute()}", err)) from None
    free = shutil.disk_usage(folder).free
    if free < need_bytes:
        raise WriteError(
            f"Cannot write in {folder.absolute()}: only {free / 1e6:.0f} MB free, and this needs about "
            f"{need_bytes / 1e6:.0f} MB. Free some space there, or save somewhere else."
        )
    return folder


def process_alive(pid: int) -> bool:
    """Whether process `pid` still runs: a lock or temporary folder named after a process that is gone is stale."""
    if os.name == "nt":  # os.kill(pid, 0) would send Ctrl-C there, not just ask: assume it runs
        return True
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:  # it exists, and belongs to someone else
        return True
    return True
