"""Checks of a run's output folder before anything is built or trained.

A run that cannot write its output, or that would resume from a broken
`last_checkpoint`, should stop at once with one line, not after the model is
built (or, for a `last_checkpoint` naming a folder, after restarting at
iteration 1 and crashing in the LR scheduler).

    check_output_dir(cfg.train.output_dir)          # creatable and writable
    check_last_checkpoint(cfg.train.output_dir)     # before --resume
    disk_full_message(err, "the output folder")      # OSError -> one line, or None
"""
import errno
import os
import tempfile

__all__ = ["SetupError", "check_last_checkpoint", "check_output_dir", "disk_full_message"]


class SetupError(ValueError):
    """The output folder of a run cannot be used."""


def check_output_dir(path):
    """Create `path` if needed and check that a file can be written in it.

    Raises:
        SetupError: `path` is empty, lies under a file, is not writable (e.g.
            in /proc), or cannot be created.
    """
    if not path:
        raise SetupError("train.output_dir is empty: set train.output_dir=<folder>")
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as e:
        parent = next((p for p in _parents(path) if os.path.exists(p)), None)
        where = f" ({parent} is a file)" if parent and not os.path.isdir(parent) else ""
        raise SetupError(
            f"cannot write to train.output_dir {path}{where}: {e.strerror or e}; "
            "choose another folder (train.output_dir=...)"
        ) from None


def _parents(path):
    path = os.path.abspath(path)
    while True:
        yield path
        parent = os.path.dirname(path)
        if parent == path:
            return
        path = parent


def check_last_checkpoint(output_dir):
    """Check `output_dir/last_checkpoint` (if any) names a checkpoint file, before --resume.

    Raises:
        SetupError: the file is not UTF-8 text, is empty, or names a folder or
            a missing file.
    """
    tag = os.path.join(output_dir, "last_checkpoint")
    if not os.path.isfile(tag):
        return
    with open(tag, "rb") as f:
        raw = f.read()
    try:
        name = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise SetupError(
            f"{tag} is not UTF-8 text (it should hold a checkpoint file name): "
            "delete it to start over, or write the name of the checkpoint to resume from"
        ) from None
    if not name:
        raise SetupError(f"{tag} is empty: delete it, or write the name of the checkpoint to resume from")
    path = name if os.path.isabs(name) else os.path.join(output_dir, name)
    if os.path.isdir(path):
        raise SetupError(f"{tag} names a folder ({path}), not a checkpoint file: cannot resume")
    if "://" not in name and not os.path.isfile(path):
        raise SetupError(f"{tag} names {path}, which does not exist: cannot resume")


def disk_full_message(err, output_dir):
    """One line for an OSError of a full / read-only / over-quota disk, else None."""
    codes = {errno.ENOSPC: "no space left on device", errno.EROFS: "read-only file system"}
    if getattr(errno, "EDQUOT", None) is not None:
        codes[errno.EDQUOT] = "disk quota exceeded"
    if not isinstance(err, OSError) or err.errno not in codes:
        return None
    where = err.filename or output_dir
    return (
        f"{codes[err.errno]} while writing {where}: free space (or set train.output_dir to another disk) "
        "and rerun with --resume; the last complete checkpoint is intact"
    )
