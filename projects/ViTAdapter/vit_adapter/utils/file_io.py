"""Atomic file writes (the one place that writes files the project must not leave half-written).

:func:`atomic_write` writes to a hidden temp file ``.<name>.XXXXXXXX.tmp`` in the
target's directory, fsyncs it, then ``os.replace``-s it over the target and fsyncs
the directory. :func:`remove_stale_temp_files` deletes what a killed write left.
"""
import contextlib
import os
import re
import tempfile
from typing import Any

import torch

__all__ = ["atomic_write", "atomic_torch_save", "atomic_write_text", "remove_stale_temp_files"]


def _fsync_dir(path: str):
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _umask() -> int:
    """The process umask, read without changing it where Linux allows (/proc)."""
    with contextlib.suppress(OSError, ValueError, StopIteration):
        with open("/proc/self/status") as f:
            return int(next(line for line in f if line.startswith("Umask:")).split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _temp_prefix(path: str) -> str:
    return f".{os.path.basename(path)}."


# mkstemp(prefix=_temp_prefix(path), suffix=".tmp"): ".<name>." + 8 random characters + ".tmp"
_TEMP_NAME = re.compile(r"^\.(?P<target>.+)\.[a-z0-9_]{8}\.tmp$")


def remove_stale_temp_files(directory: str, targets) -> list:
    """Delete the hidden temp files a killed :func:`atomic_write` left in `directory`
    for a file whose name `targets(name)` accepts; returns the removed paths.
    Only names of our own pattern (``.<target>.XXXXXXXX.tmp``) are touched."""
    removed = []
    with contextlib.suppress(OSError):
        for name in os.listdir(directory):
            m = _TEMP_NAME.match(name)
            if m and targets(m.group("target")):
                path = os.path.join(directory, name)
                with contextlib.suppress(OSError):
                    os.remove(path)
                    removed.append(path)
    return removed


def atomic_write(path: str, write_fn, mode: str = "wb"):
    """Write `path` through `write_fn(file)` into a hidden temp file next to it, fsync,
    then ``os.replace``: readers see the old file or the whole new one, never a part.
    The file gets the permissions a plain ``open()`` would give (the umask)."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=_temp_prefix(path), suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp creates 0600; open() would follow the umask
        with os.fdopen(fd, mode) as f:
            write_fn(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise
    _fsync_dir(directory)


def atomic_torch_save(obj: Any, path: str):
    """``torch.save`` to a temp file next to `path`, fsync, then ``os.replace``."""
    atomic_write(path, lambda f: torch.save(obj, f))


def atomic_write_text(path: str, text: str):
    """Write a small text file atomically (temp file, fsync, ``os.replace``)."""
    atomic_write(path, lambda f: f.write(text), mode="w")
