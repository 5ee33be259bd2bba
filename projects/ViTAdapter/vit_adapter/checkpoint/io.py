"""Reading checkpoint files without running their code, and atomic writes.

:func:`load_checkpoint_file` reads ``.safetensors``; ``.pth``/``.pt``/``.tar``
with ``torch.load(weights_only=True)`` (numpy arrays allowed); ``.npz`` (AugReg /
big_vision, ``numpy.load(allow_pickle=False)``); ``.pkl`` (detectron2 model zoo)
with an unpickler that only builds numpy arrays and plain containers. A file that
needs any other pickled object is refused with :class:`UnsafeCheckpointError`
unless the caller opts in for a trusted file (``allow_unsafe_pickle=True`` or
``VIT_ADAPTER_ALLOW_UNSAFE_PICKLE=1``); a damaged file is a
:class:`CorruptCheckpointError`.
"""
import contextlib
import logging
import math
import os
import pickle
import re
import tempfile
from collections import OrderedDict
from typing import Any, List, Optional

import numpy as np
import torch

from vit_adapter.checkpoint import model_zoo

logger = logging.getLogger(__name__)

ALLOW_UNSAFE_PICKLE_ENV = "VIT_ADAPTER_ALLOW_UNSAFE_PICKLE"


class CheckpointError(Exception):
    """A checkpoint cannot be used; the message says why in terms a user can act on."""


class UnsafeCheckpointError(CheckpointError, RuntimeError):
    """The checkpoint file needs arbitrary pickled objects to load (it could run code)."""


class CheckpointMismatchError(CheckpointError, ValueError):
    """The checkpoint's tensors do not fit the model (another size or architecture)."""


class CorruptCheckpointError(CheckpointError, ValueError):
    """The file is not a readable checkpoint (truncated, corrupt, or not a checkpoint at all)."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """No checkpoint file at the given path."""


class CheckpointChecksumError(CheckpointError, model_zoo.ChecksumError):
    """The file does not have the sha256 the model zoo registered for it."""


# ----------------------------------------------------------------------------- safe reading


def _allow_unsafe_from_env() -> bool:
    return os.environ.get(ALLOW_UNSAFE_PICKLE_ENV, "").strip().lower() in ("1", "true", "yes")


def _numpy_safe_globals() -> List[Any]:
    """numpy array / scalar / dtype reconstructors: data only, no code paths."""
    core = getattr(np, "_core", None) or np.core
    out = [core.multiarray._reconstruct, core.multiarray.scalar, np.ndarray, np.dtype]
    dtypes = getattr(np, "dtypes", None)  # numpy >= 1.25: one class per dtype
    if dtypes is not None:
        out += [getattr(dtypes, n) for n in dir(dtypes) if n.endswith("DType")]
    return out


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler for detectron2 / Detectron ``.pkl`` model-zoo files: numpy arrays,
    numpy scalars and builtin containers only."""

    _ALLOWED = {
        ("collections", "OrderedDict"),
        ("builtins", "dict"),
        ("builtins", "list"),
        ("builtins", "tuple"),
        ("builtins", "set"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
    }

    def find_class(self, module, name):
        if (module, name) in self._ALLOWED or (
            module == "numpy.dtypes" and name.endswith("DType")
        ):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"global '{module}.{name}' is not allowed")


def _unsafe_message(filename: str, detail: str) -> str:
    return (
        f"refusing to load {filename}: it needs arbitrary pickled objects ({detail}), and "
        "unpickling them can run code. If you trust this file, opt in with "
        f"ViTAdapterCheckpointer(..., allow_unsafe_pickle=True) or {ALLOW_UNSAFE_PICKLE_ENV}=1 "
        "(better: re-save it as weights only with tools/publish_checkpoint.py)."
    )


def _corrupt_error(filename: str, reason) -> CorruptCheckpointError:
    """The error for a file that is not a readable checkpoint; `reason` is a
    description or the exception the reader raised."""
    if isinstance(reason, Exception):
        reason = f"{type(reason).__name__}: {reason}"
    return CorruptCheckpointError(
        f"{filename} is not a readable checkpoint ({reason}); expected a PyTorch .pth/.pt, "
        ".safetensors, detectron2 .pkl or timm .npz file. Is it truncated (an interrupted "
        "download or copy) or another kind of file?"
    )


def _malformed_pickle(filename: str) -> Optional[str]:
    """Why `filename` is not a well-formed pickle / PyTorch zip checkpoint, or
    None if its pickle opcodes parse. Reads opcodes only (``pickletools``),
    nothing is executed: tells a corrupt file from one whose objects are
    merely not allowed."""
    import pickletools
    import zipfile

    try:
        if zipfile.is_zipfile(filename):
            with zipfile.ZipFile(filename) as zf:
                names = [n for n in zf.namelist() if n.endswith("data.pkl")]
                if not names:
                    return "a zip archive without a PyTorch data.pkl"
                bad = zf.testzip()
                if bad is not None:
                    return f"zip member {bad} fails its CRC check"
                data = zf.read(names[0])
        else:
            with open(filename, "rb") as f:
                data = f.read(64 << 20)  # the object pickle comes first in legacy files
        for _ in pickletools.genops(data):
            pass
    except Exception as e:  # noqa: BLE001 - any parse failure means "malformed"
        return f"{type(e).__name__}: {e}"
    return None


def _raise_for_unreadable(filename: str, err: Exception, allow_unsafe_pickle: bool) -> None:
    """Turn a failed safe load into the right CheckpointError (returns only when
    the caller may retry with full pickle)."""
    if isinstance(err, pickle.UnpicklingError):
        problem = _malformed_pickle(filename)
        if problem is None:
            if allow_unsafe_pickle:
                return
            raise UnsafeCheckpointError(_unsafe_message(filename, _first_line_global(err))) from None
        raise _corrupt_error(filename, problem) from None
    raise _corrupt_error(filename, err) from None


def _first_line_global(err: Exception) -> str:
    m = re.search(r"(Unsupported global: GLOBAL [\w.]+|global '[\w.]+'[^\n]*)", str(err))
    return m.group(1) if m else str(err).splitlines()[-1][:200]


def load_checkpoint_file(filename: str, *, allow_unsafe_pickle: bool = False) -> Any:
    """Read a checkpoint file without executing code.

    Returns the loaded object (usually a dict): safetensors / npz files give a
    state dict; ``.npz`` is converted to timm names by :func:`load_augreg_npz`.

    Raises:
        UnsafeCheckpointError: the file needs arbitrary pickled objects and
            `allow_unsafe_pickle` is False.
        CorruptCheckpointError: the file is not a readable checkpoint.
        FileNotFoundError: no such file.
    """
    if not os.path.isfile(filename):
        raise CheckpointNotFoundError(f"checkpoint file not found: {filename}")
    if filename.endswith(".safetensors"):
        from safetensors.torch import load_file

        try:
            return load_file(filename, device="cpu")
        except Exception as e:  # noqa: BLE001 - safetensors' own errors: header / size problems
            raise _corrupt_error(filename, e) from None
    if filename.endswith(".npz"):
        try:
            return load_augreg_npz(filename)
        except CheckpointError:
            raise
        except Exception as e:  # noqa: BLE001 - numpy / zipfile errors of a damaged archive
            raise _corrupt_error(filename, e) from None
    if filename.endswith(".pkl"):
        with open(filename, "rb") as f:
            try:
                return _NumpyOnlyUnpickler(f, encoding="latin1").load()
            except Exception as e:  # noqa: BLE001 - classified below
                _raise_for_unreadable(filename, e, allow_unsafe_pickle)
        logger.warning("Loading %s with plain pickle (allow_unsafe_pickle=True).", filename)
        with open(filename, "rb") as f:
            return pickle.load(f, encoding="latin1")
    try:
        with torch.serialization.safe_globals(_numpy_safe_globals()):
            return torch.load(filename, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - classified below
        _raise_for_unreadable(filename, e, allow_unsafe_pickle)
    logger.warning("Loading %s with weights_only=False (allow_unsafe_pickle=True).", filename)
    return torch.load(filename, map_location="cpu", weights_only=False)


def load_augreg_npz(filename: str) -> "OrderedDict[str, torch.Tensor]":
    """AugReg / big_vision ``.npz`` ViT -> timm state dict (timm's own ``_load_weights``).

    A timm ``VisionTransformer`` shaped after the file (width, depth, heads,
    grid, prefix tokens, classes) receives the weights; its state dict is
    returned with timm names (``patch_embed.proj.weight``, ``blocks.N.*``,
    ``pos_embed`` incl. the cls slot, ``cls_token``, ``norm.*``, ``head.*``).
    """
    from timm.models.vision_transformer import VisionTransformer as TimmViT
    from timm.models.vision_transformer import _load_weights

    with np.load(filename, allow_pickle=False) as w:
        keys = set(w.files)
        prefix = next(
            (p for p in ("", "opt/target/", "params/", "params/img/") if f"{p}embedding/kernel" in keys),
            None,
        )
        if prefix is None:
            raise CheckpointMismatchError(f"{filename}: not a big_vision / AugReg ViT .npz (no 'embedding/kernel')")
        kernel = w[f"{prefix}embedding/kernel"]  # (p, p, in_chans, D)
        patch, in_chans, dim = kernel.shape[0], kernel.shape[2], kernel.shape[3]
        blocks = {int(m.group(1)) for k in keys for m in [re.match(rf"{prefix}Transformer/encoderblock_(\d+)/", k)] if m}
        big_vision = f"{prefix}pos_embedding" in keys
        mha = "MultiHeadDotProductAttention_0" if big_vision else "MultiHeadDotProductAttention_1"
        mlp = "MlpBlock_0" if big_vision else "MlpBlock_3"
        if blocks:
            blk, lead = f"{prefix}Transformer/encoderblock_0/", 0
        else:  # big_vision "scanned" layout: one stacked array per parameter, depth first
            blk, lead = f"{prefix}Transformer/encoderblock/", 1
            blocks = range(w[f"{blk}LayerNorm_0/scale"].shape[0])
        heads = w[f"{blk}{mha}/query/kernel"].shape[1 + lead]
        hidden = w[f"{blk}{mlp}/Dense_0/kernel"].shape[1 + lead]
        pos = w[f"{prefix}pos_embedding" if big_vision else f"{prefix}Transformer/posembed_input/pos_embedding"]
        has_cls = f"{prefix}cls" in keys
        grid = int(math.isqrt(pos.shape[1] - int(has_cls)))
        num_classes = w[f"{prefix}head/bias"].shape[-1] if f"{prefix}head/bias" in keys else 0
    model = TimmViT(
        img_size=grid * patch,
        patch_size=patch,
        in_chans=in_chans,
        embed_dim=dim,
        depth=len(blocks),
        num_heads=heads,
        mlp_ratio=hidden / dim,
        class_token=has_cls,
        global_pool="token" if has_cls else "avg",
        num_classes=num_classes,
    )
    _load_weights(model, filename, prefix=prefix)
    return OrderedDict((k, v.detach().clone()) for k, v in model.state_dict().items())



# ----------------------------------------------------------------------------- atomic writes


def _fsync_dir(path: str):
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _atomic_write(path: str, write_fn, mode: str = "wb"):
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
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
    _atomic_write(path, lambda f: torch.save(obj, f))


def atomic_write_text(path: str, text: str):
    """Write a small text file atomically (temp file, fsync, ``os.replace``)."""
    _atomic_write(path, lambda f: f.write(text), mode="w")


