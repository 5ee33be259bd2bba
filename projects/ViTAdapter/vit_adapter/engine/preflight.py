"""Checks of a run's output folder before anything is built or trained.

A run that cannot write its output, or that would resume from a broken
`last_checkpoint`, should stop at once with one line, not after the model is
built (or, for a `last_checkpoint` naming a folder, after restarting at
iteration 1 and crashing in the LR scheduler).

    check_output_dir(cfg.train.output_dir)          # creatable and writable
    check_last_checkpoint(cfg.train.output_dir)     # before --resume
    check_device(cfg.train.device)                   # "cpu", "cuda", "cuda:N"
    check_optimizer(cfg.optimizer)                   # lr > 0, weight decay >= 0, ...
    check_batch_size(cfg.dataloader.train, world_size=8)
    check_num_classes(cfg.model.roi_heads.num_classes, {"my_val": ["a", "b"]})
    disk_full_message(err, "the output folder")      # OSError -> one line, or None

The config checks run in `train_net.py` before any worker process is
started, so a wrong value costs a second, not a spawned job.
"""
import errno
import math
import numbers
import os
import tempfile

__all__ = [
    "SetupError",
    "check_batch_size",
    "check_device",
    "check_last_checkpoint",
    "check_num_classes",
    "check_optimizer",
    "check_output_dir",
    "disk_full_message",
]


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
    if not os.path.lexists(tag):
        return
    if not os.path.isfile(tag):
        kind = "a folder" if os.path.isdir(tag) else "not a regular file"
        raise SetupError(
            f"{tag} is {kind}, not a file naming the checkpoint to resume from: cannot resume "
            "(remove it to start over, or write the checkpoint's file name into a file of that name)"
        )
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


def check_device(device):
    """Raise SetupError unless `device` (train.device) is "cpu", "cuda" or "cuda:N"."""
    text = str(device).strip()
    kind, _, index = text.partition(":")
    if kind not in ("cpu", "cuda") or (index and not (kind == "cuda" and index.isdigit())):
        raise SetupError(
            f"train.device={device!r} is not a device: use train.device=cuda (cuda:N for one GPU) or train.device=cpu"
        )


def _number(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def check_optimizer(optimizer_cfg):
    """Raise SetupError for optimizer settings torch would refuse deep inside `instantiate`
    (or that would train nothing): `lr` not a positive finite number, a negative or
    non-finite `weight_decay` / `momentum` / `eps`, `betas` outside [0, 1).

    `optimizer_cfg` is the config's `optimizer` node (a LazyCall of a torch optimizer).
    Keys the optimizer does not have are not checked; interpolations (``"${..lr}"``) are
    read resolved.
    """
    if optimizer_cfg is None:
        return
    if "lr" in optimizer_cfg:
        lr = optimizer_cfg.lr
        if not _number(lr) or lr <= 0:
            raise SetupError(f"optimizer.lr={lr!r}: the learning rate must be a positive finite number")
    for key in ("weight_decay", "momentum", "eps"):
        if key in optimizer_cfg and optimizer_cfg[key] is not None:
            value = optimizer_cfg[key]
            if not _number(value) or value < 0:
                raise SetupError(f"optimizer.{key}={value!r}: must be a finite number >= 0")
    if "betas" in optimizer_cfg and optimizer_cfg.betas is not None:
        betas = list(optimizer_cfg.betas)
        if len(betas) != 2 or not all(_number(b) and 0 <= b < 1 for b in betas):
            raise SetupError(f"optimizer.betas={betas!r}: must be two numbers in [0, 1)")


def check_batch_size(loader_cfg, world_size: int = 1):
    """Raise SetupError unless `loader_cfg.total_batch_size` (the training loader of the
    config) is a positive multiple of `world_size` (processes) and `num_workers` is >= 0."""
    if loader_cfg is None:
        return
    if "total_batch_size" in loader_cfg:
        total = loader_cfg.total_batch_size
        if not isinstance(total, int) or isinstance(total, bool) or total <= 0:
            raise SetupError(
                f"dataloader.train.total_batch_size={total!r}: must be a positive number of images per iteration"
            )
        if total % world_size:
            raise SetupError(
                f"dataloader.train.total_batch_size={total} is not a multiple of the {world_size} processes "
                f"(--num-gpus x --num-machines): use a multiple of {world_size}"
            )
    if "num_workers" in loader_cfg:
        workers = loader_cfg.num_workers
        if not isinstance(workers, int) or isinstance(workers, bool) or workers < 0:
            raise SetupError(f"dataloader.train.num_workers={workers!r}: must be an integer >= 0")


def check_num_classes(num_classes, dataset_classes, key="model.roi_heads.num_classes"):
    """Raise SetupError unless every dataset has exactly `num_classes` classes.

    A model with more classes than the data trains silently and then fails in
    COCOEvaluator; one with fewer cannot be trained on the data's labels.

    Args:
        num_classes (int): the model's class count (`key` in the config).
        dataset_classes (dict): dataset name -> list of class names (None: unknown, not checked).
    """
    for name, classes in dataset_classes.items():
        if classes is None or len(classes) == num_classes:
            continue
        shown = ", ".join(map(str, classes[:5])) + (", ..." if len(classes) > 5 else "")
        raise SetupError(
            f"{key}={num_classes} but dataset '{name}' has {len(classes)} classes ({shown}): "
            f"set {key}={len(classes)}"
        )


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
