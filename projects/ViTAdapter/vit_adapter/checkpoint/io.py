"""Reading checkpoint files without running their code, and atomic writes.

:func:`read_checkpoint` tells the format from the bytes (:func:`sniff_format`),
checks integrity before it parses (a ``<file>.sha256`` sidecar when present;
zip members' declared sizes against the file size and their CRC-32s) and
reads ``.safetensors``; PyTorch files with ``torch.load(weights_only=True)``;
``.npz`` (AugReg / big_vision, ``numpy.load(allow_pickle=False)``); ``.pkl``
(detectron2 model zoo) with an unpickler of plain containers. numpy arrays in
either pickle go through the checked stand-ins of
:mod:`vit_adapter.checkpoint.safe_pickle`, never through numpy's own
reconstructors. A file that needs any other pickled object, or numpy data
that is not plain numbers, is refused with :class:`UnsafeCheckpointError`
unless the caller opts in for a trusted file (``allow_unsafe_pickle=True`` or
``VIT_ADAPTER_ALLOW_UNSAFE_PICKLE=1``); a damaged file is a
:class:`CorruptCheckpointError`, a sidecar mismatch a
:class:`CheckpointChecksumError`.

Atomic writes (:func:`atomic_torch_save`, :func:`atomic_write_text`,
:func:`remove_stale_temp_files`) live in :mod:`vit_adapter.utils.file_io`.
"""
import io
import logging
import math
import os
import pickle
import re
from collections import OrderedDict
from typing import Any, Mapping, Optional, Tuple

import numpy as np
import torch

from vit_adapter.checkpoint import model_zoo
from vit_adapter.checkpoint.safe_pickle import SafeUnpickler, UnsafeNumpyData, finalize, torch_safe_globals

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
    """The file does not have the sha256 the model zoo (or its ``.sha256`` file) records."""


class CheckpointSourceError(CheckpointError, model_zoo.ModelZooError):
    """A checkpoint name / URL cannot be resolved or downloaded (unknown model-zoo name, offline, ...)."""


# ----------------------------------------------------------------------------- safe reading


def _allow_unsafe_from_env() -> bool:
    return os.environ.get(ALLOW_UNSAFE_PICKLE_ENV, "").strip().lower() in ("1", "true", "yes")


_TORCH_LEGACY_MAGIC = b"\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19"  # pickled torch.serialization.MAGIC_NUMBER
# A zip checkpoint may not declare more than INFLATION_LIMIT x its file size (+ 64 MiB) of
# member data: PyTorch stores its members uncompressed and weights barely compress, so
# only a crafted archive (a "zip bomb") is refused, before anything is inflated.
INFLATION_LIMIT = 4
_INFLATION_SLACK = 64 << 20


def sniff_format(filename: str) -> str:
    """What `filename` holds, from its bytes (not its name): "torch_zip", "npz",
    "zip" (any other zip), "safetensors", "torch_legacy" (pre-1.6 torch.save),
    "pickle" (e.g. detectron2 .pkl), or "unknown"."""
    import zipfile

    size = os.path.getsize(filename)
    with open(filename, "rb") as f:
        head = f.read(32)
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        try:
            with zipfile.ZipFile(filename) as zf:
                names = zf.namelist()
        except (zipfile.BadZipFile, OSError, ValueError):
            return "unknown"
        if any(n == "data.pkl" or n.endswith("/data.pkl") for n in names):
            return "torch_zip"
        if names and all(n.endswith(".npy") for n in names):
            return "npz"
        return "zip"
    if len(head) > 8 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") <= size - 8:
        return "safetensors"
    if head[:1] == b"\x80":
        return "torch_legacy" if _TORCH_LEGACY_MAGIC in head else "pickle"
    if filename.endswith(".pkl") and head[:1] in (b"(", b"}", b"]", b"c"):  # protocol 0 / 1 pickles
        return "pickle"
    return "unknown"


def _check_zip(filename: str, kind: str, crc: bool) -> None:
    """Refuse a zip checkpoint that would inflate past the limit, an ``.npz`` member whose
    ``.npy`` header promises more than it holds (or an object array), and, when `crc`,
    any member whose CRC-32 fails (read in 1 MiB blocks). Reads headers before data."""
    import zipfile

    try:
        with zipfile.ZipFile(filename) as zf:
            infos = zf.infolist()
            declared = sum(i.file_size for i in infos)
            limit = INFLATION_LIMIT * os.path.getsize(filename) + _INFLATION_SLACK
            if declared > limit:
                raise _corrupt_error(
                    filename,
                    f"its zip members declare {declared / 2**20:.0f} MiB, more than {INFLATION_LIMIT}x the file's "
                    "size: refused before inflating (a crafted archive?)",
                )
            if kind == "npz":
                for info in infos:
                    _check_npy_header(filename, zf, info)
            if crc:
                bad = zf.testzip()
                if bad is not None:
                    raise _corrupt_error(filename, f"zip member {bad} fails its CRC check: the file is damaged")
    except CheckpointError:
        raise
    except Exception as e:  # noqa: BLE001 - zipfile / zlib errors of a damaged archive
        raise _corrupt_error(filename, e) from None


def _check_npy_header(filename: str, zf, info) -> None:
    fmt = np.lib.format
    with zf.open(info) as f:
        version = fmt.read_magic(f)
        shape, _, dtype = fmt.read_array_header_1_0(f) if version == (1, 0) else fmt.read_array_header_2_0(f)
        if dtype.hasobject:
            raise _corrupt_error(filename, f"{info.filename} holds Python objects, not numbers")
        nbytes = math.prod(shape) * dtype.itemsize
        if nbytes > info.file_size:
            raise _corrupt_error(
                filename, f"{info.filename} declares a {shape} {dtype} array ({nbytes} bytes) in {info.file_size} bytes"
            )


def _verify_sidecar(filename: str) -> bool:
    """Check ``<filename>.sha256`` (``sha256sum`` format) when it exists; True if it did."""
    sidecar = filename + ".sha256"
    if not os.path.isfile(sidecar):
        return False
    try:
        with open(sidecar, "rb") as f:
            words = f.read(4096).split()
        expected = words[0].decode("ascii", "replace").lower() if words else ""
        if not re.fullmatch(r"[0-9a-f]{64}", expected):
            raise _corrupt_error(filename, f"its checksum file {sidecar} does not start with a sha256 hex digest")
        model_zoo.verify_sha256(filename, expected, what=f"{sidecar} records")
    except model_zoo.ChecksumError as e:
        raise CheckpointChecksumError(str(e)) from None
    except OSError as e:
        raise _corrupt_error(filename, e) from None
    return True


def _unsafe_message(filename: str, detail: str) -> str:
    return (
        f"refusing to load {filename}: it needs arbitrary pickled objects ({detail}), and "
        "unpickling them can run code. If you trust this file, opt in with "
        f"ViTAdapterCheckpointer(..., allow_unsafe_pickle=True) or {ALLOW_UNSAFE_PICKLE_ENV}=1 "
        "(better: re-save it as weights only with tools/publish_checkpoint.py)."
    )


def _unsafe_numpy_message(filename: str, detail: str) -> str:
    return (
        f"refusing to load {filename}: it holds numpy data that is not a plain numeric array ({detail}); "
        "numpy would build it unchecked, which can corrupt memory. Only a file you trust may be loaded "
        f"with allow_unsafe_pickle=True / {ALLOW_UNSAFE_PICKLE_ENV}=1."
    )


def _corrupt_error(filename: str, reason) -> CorruptCheckpointError:
    """The error for a file that is not a readable checkpoint; `reason` is a
    description or the exception the reader raised (first line kept)."""
    if isinstance(reason, Exception):
        text = str(reason).strip().splitlines()
        reason = f"{type(reason).__name__}: {text[0][:300] if text else ''}"
    return CorruptCheckpointError(
        f"{filename} is not a readable checkpoint ({reason}); expected a PyTorch .pth/.pt, "
        ".safetensors, detectron2 .pkl or timm .npz file. Is it truncated (an interrupted "
        "download or copy) or another kind of file?"
    )


def _malformed_pickle(filename: str, kind: str) -> Optional[str]:
    """Why `filename` is not a well-formed pickle / PyTorch zip checkpoint, or
    None if its pickle opcodes parse. Reads opcodes only (``pickletools``),
    nothing is executed: tells a corrupt file from one whose objects are
    merely not allowed."""
    import pickletools
    import zipfile

    try:
        if kind == "torch_zip":
            with zipfile.ZipFile(filename) as zf:
                name = next(n for n in zf.namelist() if n == "data.pkl" or n.endswith("/data.pkl"))
                data = zf.read(name)
        else:
            with open(filename, "rb") as f:
                data = f.read(64 << 20)  # the object pickle comes first in legacy files
        for _ in pickletools.genops(data):
            pass
    except Exception as e:  # noqa: BLE001 - any parse failure means "malformed"
        return f"{type(e).__name__}: {e}"
    return None


def _raise_for_unreadable(filename: str, kind: str, err: Exception, allow_unsafe_pickle: bool) -> None:
    """Turn a failed safe load into the right CheckpointError (returns only when
    the caller may retry with full pickle)."""
    if isinstance(err, UnsafeNumpyData):
        if allow_unsafe_pickle:
            return
        raise UnsafeCheckpointError(_unsafe_numpy_message(filename, str(err))) from None
    if isinstance(err, pickle.UnpicklingError):
        problem = _malformed_pickle(filename, kind)
        if problem is None:
            if allow_unsafe_pickle:
                return
            raise UnsafeCheckpointError(_unsafe_message(filename, _first_line_global(err))) from None
        raise _corrupt_error(filename, problem) from None
    if isinstance(err, RecursionError):
        raise _corrupt_error(filename, "objects nested too deeply") from None
    raise _corrupt_error(filename, err) from None


def _first_line_global(err: Exception) -> str:
    m = re.search(r"(Unsupported global: GLOBAL [\w.]+|global '[\w.]+'[^\n]*)", str(err))
    return m.group(1) if m else str(err).strip().splitlines()[-1][:200]


def read_checkpoint(filename: str, *, allow_unsafe_pickle: bool = False) -> Tuple[Any, str]:
    """Read a checkpoint file without executing code; returns (object, kind).

    `kind` is what the bytes are (:func:`sniff_format`), whatever the file is
    called. In order: a ``<filename>.sha256`` file, when present, must match
    (``tools/publish_checkpoint.py`` writes it); zip files (PyTorch >= 1.6,
    ``.npz``) may not declare more than :data:`INFLATION_LIMIT` x their size,
    and their CRC-32s are checked (skipped when the sha256 was); then
    ``.safetensors`` -> safetensors; PyTorch files -> ``torch.load(weights_only=True)``;
    ``.npz`` -> :func:`load_augreg_npz`; other pickles (detectron2 ``.pkl``) ->
    an unpickler of plain containers. numpy arrays / scalars go through the
    checked stand-ins of :mod:`vit_adapter.checkpoint.safe_pickle` in both
    pickle readers.

    Raises:
        UnsafeCheckpointError: the file needs arbitrary pickled objects, or numpy
            data that is not plain numbers, and `allow_unsafe_pickle` is False.
        CheckpointChecksumError: the sha256 sidecar does not match.
        CorruptCheckpointError: the file is not a readable checkpoint.
        CheckpointNotFoundError: no such file.
    """
    if not os.path.isfile(filename):
        raise CheckpointNotFoundError(f"checkpoint file not found: {filename}")
    verified = _verify_sidecar(filename)
    try:
        kind = sniff_format(filename)
    except OSError as e:
        raise _corrupt_error(filename, e) from None
    if kind == "zip":
        raise _corrupt_error(filename, "a zip archive that is neither a PyTorch checkpoint nor an .npz")
    if kind in ("torch_zip", "npz"):
        _check_zip(filename, kind, crc=not verified)
    if kind == "safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(filename, device="cpu"), kind
        except Exception as e:  # noqa: BLE001 - safetensors' own errors: header / size problems
            raise _corrupt_error(filename, e) from None
    if kind == "npz":
        try:
            return load_augreg_npz(filename), kind
        except CheckpointError:
            raise
        except Exception as e:  # noqa: BLE001 - numpy / zipfile errors of a damaged archive
            raise _corrupt_error(filename, e) from None
    if kind == "pickle":
        with open(filename, "rb") as f:
            data = f.read()  # in memory: a length field past the end cannot make pickle allocate it
        try:
            return finalize(SafeUnpickler(io.BytesIO(data), encoding="latin1").load()), kind
        except Exception as e:  # noqa: BLE001 - classified below
            _raise_for_unreadable(filename, kind, e, allow_unsafe_pickle)
        logger.warning("Loading %s with plain pickle (allow_unsafe_pickle=True).", filename)
        return pickle.loads(data, encoding="latin1"), kind
    try:
        with torch.serialization.safe_globals(torch_safe_globals()):
            return finalize(torch.load(filename, map_location="cpu", weights_only=True)), kind
    except Exception as e:  # noqa: BLE001 - classified below
        _raise_for_unreadable(filename, kind, e, allow_unsafe_pickle)
    logger.warning("Loading %s with weights_only=False (allow_unsafe_pickle=True).", filename)
    return torch.load(filename, map_location="cpu", weights_only=False), kind


def load_checkpoint_file(filename: str, *, allow_unsafe_pickle: bool = False) -> Any:
    """:func:`read_checkpoint` without the kind: the loaded object (usually a dict;
    safetensors / npz files give a state dict, ``.npz`` with timm names)."""
    return read_checkpoint(filename, allow_unsafe_pickle=allow_unsafe_pickle)[0]


def check_weights(weights: Any, filename: str, what: str = "the state dict") -> None:
    """Raise :class:`CorruptCheckpointError` unless `weights` maps str names to tensors / numpy arrays."""
    if not isinstance(weights, Mapping):
        raise _corrupt_error(filename, f"{what} is a {type(weights).__name__}, not a dict of tensors")
    for k, v in weights.items():
        if not isinstance(k, str):
            raise _corrupt_error(filename, f"{what} has a key {k!r:.80} of type {type(k).__name__}, not a parameter name")
        if not isinstance(v, (torch.Tensor, np.ndarray)):
            raise _corrupt_error(filename, f"{what} entry {k!r:.80} is a {type(v).__name__}, not a tensor")


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
