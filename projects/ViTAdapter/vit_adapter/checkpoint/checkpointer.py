"""Checkpoints for ViT-Adapter detectors: safe loading, ImageNet / official
initialisation, size-mismatch reports and atomic saves.

:class:`ViTAdapterCheckpointer` is a drop-in :class:`DetectionCheckpointer`
(``train.init_checkpoint``, ``--resume``, ``--eval-only`` work unchanged) that

* reads files without running code: ``.safetensors``; ``.pth``/``.pt``/``.tar``
  with ``torch.load(weights_only=True)`` (numpy arrays allowed); ``.npz``
  (AugReg / big_vision, with ``numpy.load(allow_pickle=False)`` and timm's own
  loader); ``.pkl`` (detectron2 model zoo) with an unpickler that only builds
  numpy arrays and plain containers. A file that needs any other pickled
  object is refused with :class:`UnsafeCheckpointError`, unless the caller
  opts in for a trusted file (``allow_unsafe_pickle=True`` or the environment
  variable ``VIT_ADAPTER_ALLOW_UNSAFE_PICKLE=1``);
* recognises what it was given (detectron2 checkpoint, official ViT-Adapter
  mmdetection checkpoint, or an ImageNet ViT: timm / DeiT ``{"model": ...}``,
  MAE, BEiT, AugReg ``.npz``, plain state dict) and maps it onto the model:
  ImageNet ViT weights go to the model's ViT (``backbone.bottom_up.`` /
  ``backbone.net.``), the position embedding is resized to the config's
  pre-training grid (timm's ``resample_abs_pos_embed``), cls / dist tokens,
  heads and final norms are dropped, and every dropped / missing / unexpected
  key is logged by name (:attr:`ViTAdapterCheckpointer.last_report`);
* refuses a checkpoint of another model size with
  :class:`CheckpointMismatchError` (a table of parameter, checkpoint shape,
  model shape, and a hint such as "checkpoint looks like ViT-Adapter-B (embed
  768, depth 12) but the model is ViT-Adapter-S (embed 384, depth 12)");
  only the class-dependent predictor layers may differ (fine-tuning on another
  dataset), those are skipped with a warning as detectron2 does; a checkpoint
  none of whose tensors belongs to the model is refused;
* for inference (``--eval-only``, ``tools/predict.py``, export:
  ``require_complete=True``, or :func:`load_for_inference`) refuses a
  checkpoint that leaves any model tensor at its initialisation, naming the
  modules it lacks (no class-count skips either);
* refuses a checkpoint whose tensors hold NaN or infinity
  (:class:`NonFiniteCheckpointError`, naming the tensors): for training init,
  ``--resume``, evaluation and export alike, since a training would die in its
  first iterations and an evaluation would predict nothing;
* refuses to resume from an ``output_dir/last_checkpoint`` that is not a file
  (a folder of that name) instead of training from scratch under a resumed
  schedule;
* resolves model-zoo names (``vit_adapter://<name>`` or ``<name>``) and URLs,
  and verifies sha256 digests (:mod:`vit_adapter.checkpoint.model_zoo`);
* saves atomically: the checkpoint is written to a temporary file in the same
  directory, fsync'd and renamed over the target; ``last_checkpoint`` is
  rewritten the same way, only after the checkpoint is complete. Files get the
  umask's permissions, and temp files of a killed save are removed at the
  next save.
"""
import difflib
import logging
import os
import re
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple

import numpy as np
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.utils import comm
from torch import nn

from vit_adapter.checkpoint import model_zoo
from vit_adapter.checkpoint.imagenet import _imagenet_vit_prefix, convert_imagenet_vit_state_dict, find_vit
from vit_adapter.checkpoint.fit import DERIVED_KEYS, Fit, compare, fit_error
from vit_adapter.checkpoint.io import (
    ALLOW_UNSAFE_PICKLE_ENV,
    CheckpointChecksumError,
    CheckpointError,
    CheckpointMismatchError,
    CheckpointNotFoundError,
    CheckpointSourceError,
    CorruptCheckpointError,
    UnsafeCheckpointError,
    _allow_unsafe_from_env,
    _corrupt_error,
    check_weights,
    load_augreg_npz,
    load_checkpoint_file,
    read_checkpoint,
)
from vit_adapter.utils.file_io import atomic_torch_save, atomic_write_text, remove_stale_temp_files
from vit_adapter.checkpoint.official import cascade_mask_stage_for, convert_official_state_dict, is_official_state_dict
from vit_adapter.modeling.vit import VisionTransformer

__all__ = [
    "ALLOW_UNSAFE_PICKLE_ENV",
    "CheckpointChecksumError",
    "CheckpointError",
    "CheckpointMismatchError",
    "CheckpointNotFoundError",
    "CheckpointSourceError",
    "CorruptCheckpointError",
    "NonFiniteCheckpointError",
    "UnsafeCheckpointError",
    "ViTAdapterCheckpointer",
    "load_for_inference",
    "atomic_torch_save",
    "atomic_write_text",
    "check_weights",
    "convert_imagenet_vit_state_dict",
    "find_vit",
    "load_augreg_npz",
    "load_checkpoint_file",
]

logger = logging.getLogger(__name__)

_SIZE_NAMES = {192: "T", 384: "S", 768: "B", 1024: "L"}


class NonFiniteCheckpointError(CheckpointError):
    """A checkpoint's weights hold NaN or infinite values."""


def non_finite_tensors(
    state_dict: Mapping[str, Any], model_sd: Mapping[str, torch.Tensor], model_keys_only: bool = True
) -> List[str]:
    """"name (k NaN of n)" for each floating tensor of `state_dict` holding a non-finite
    value. With `model_keys_only`, only keys of `model_sd` are checked; a tensor the
    model itself holds non-finite (e.g. a ``-inf`` mask buffer) is not reported."""
    bad = []
    for key, value in state_dict.items():
        if not isinstance(value, torch.Tensor) or not value.is_floating_point():
            continue
        if key not in model_sd and model_keys_only:
            continue
        finite = torch.isfinite(value)
        if bool(finite.all()) or (key in model_sd and not bool(torch.isfinite(model_sd[key]).all())):
            continue
        n_nan = int(torch.isnan(value).sum())
        n_inf = value.numel() - int(finite.sum()) - n_nan
        what = " and ".join(f"{n} {kind}" for n, kind in ((n_nan, "NaN"), (n_inf, "inf")) if n)
        bad.append(f"{key} ({what} of {value.numel()})")
    return bad


# ----------------------------------------------------------------------------- size report


def _vit_size_of(state_dict: Mapping[str, Any], prefix: str) -> Optional[Tuple[int, int, bool]]:
    """(embed_dim, depth, has_adapter) of the ViT stored under `prefix`, if any."""
    w = state_dict.get(prefix + "patch_embed.proj.weight")
    if w is None or not hasattr(w, "shape"):
        return None
    pat = re.compile(re.escape(prefix) + r"blocks\.(\d+)\.")
    depth = 1 + max((int(m.group(1)) for k in state_dict for m in [pat.match(k)] if m), default=-1)
    has_adapter = (prefix + "level_embed") in state_dict or any(k.startswith(prefix + "spm.") for k in state_dict)
    return int(w.shape[0]), depth, has_adapter


def _size_name(embed_dim: int, depth: int, adapter: bool) -> str:
    base = "ViT-Adapter" if adapter else "ViT"
    letter = _SIZE_NAMES.get(embed_dim)
    if letter == "L" and depth != 24 or letter in ("T", "S", "B") and depth != 12:
        letter = None
    return f"{base}-{letter}" if letter else f"a {base}"


def _size_hint(state_dict: Mapping[str, Any], vit_prefix: str, vit: Optional[VisionTransformer]) -> str:
    """"checkpoint looks like ViT-Adapter-B (...) but the model is ..." when the ViT sizes differ, else ""."""
    ck = _vit_size_of(state_dict, vit_prefix)
    if ck is None or vit is None:
        return ""
    from vit_adapter.modeling.backbone import ViTAdapter

    model_adapter = isinstance(vit, ViTAdapter)
    m_dim, m_depth = vit.embed_dim, len(vit.blocks)
    c_dim, c_depth, c_adapter = ck
    if (c_dim, c_depth) == (m_dim, m_depth):
        return ""
    return (
        f"checkpoint looks like {_size_name(c_dim, c_depth, c_adapter or model_adapter)} "
        f"(embed {c_dim}, depth {c_depth}) but the model is "
        f"{_size_name(m_dim, m_depth, model_adapter)} (embed {m_dim}, depth {m_depth}): "
        "use the config of the checkpoint's size, or the checkpoint of the config's size."
    )


# ----------------------------------------------------------------------------- checkpointer


class ViTAdapterCheckpointer(DetectionCheckpointer):
    """:class:`DetectionCheckpointer` with safe loading, ViT / official-weight
    mapping, size-mismatch errors, model-zoo names and atomic saves.

    Args:
        model, save_dir, save_to_disk, checkpointables: as DetectionCheckpointer.
        allow_unsafe_pickle (bool): load files that need arbitrary pickled
            objects (only for files you trust). Default: the environment
            variable ``VIT_ADAPTER_ALLOW_UNSAFE_PICKLE`` ("1" enables).
        patch_kernel_resize (str): how an ImageNet ViT's patch kernel of another
            size (DINOv2: 14) is resized: "bilinear" (the release) or "pinv"
            (FlexiViT), see :mod:`vit_adapter.checkpoint.dinov2`.
        require_complete (bool): the model will be used as loaded (evaluation,
            prediction, export): every tensor of the model must come from the
            checkpoint with its shape, else :class:`CheckpointMismatchError`
            names the modules left at their initialisation (class-count skips
            included). Default False (training init: an ImageNet ViT or a
            detector of other classes may leave parts at their init).

    After each ``load``, :attr:`last_report` holds what happened: ``format``
    ("detectron2", "official_mmdet", "imagenet_vit"), ``loaded`` (keys),
    ``missing``, ``unexpected``, ``skipped_shapes``, ``dropped`` (checkpoint keys
    with no place in a detector, e.g. cls token / head) and
    ``pos_embed_resized``.
    """

    def __init__(
        self,
        model: nn.Module,
        save_dir: str = "",
        *,
        save_to_disk: Optional[bool] = None,
        allow_unsafe_pickle: Optional[bool] = None,
        patch_kernel_resize: str = "bilinear",
        require_complete: bool = False,
        **checkpointables,
    ):
        super().__init__(model, save_dir, save_to_disk=save_to_disk, **checkpointables)
        self.patch_kernel_resize = patch_kernel_resize
        self.allow_unsafe_pickle = _allow_unsafe_from_env() if allow_unsafe_pickle is None else allow_unsafe_pickle
        self.require_complete = require_complete
        self.last_report: Dict[str, Any] = {}
        self._source = ""

    # ---- loading
    def load(self, path: str, checkpointables: Optional[List[str]] = None) -> Dict[str, Any]:
        if path:
            path = self._local_path(path)
        self._source = path
        return super().load(path, checkpointables=checkpointables)

    def _local_path(self, path: str) -> str:
        """Model-zoo name / URL -> verified local file (model_zoo.get_local_path)."""
        try:
            local = model_zoo.get_local_path(path)
        except model_zoo.ChecksumError as e:
            raise CheckpointChecksumError(str(e)) from None
        except model_zoo.ModelZooError as e:
            raise CheckpointSourceError(str(e)) from None
        if not os.path.isfile(local) and "://" not in local and comm.get_world_size() == 1:
            # (several processes: detectron2 decides, it tolerates files only on the main worker)
            close = difflib.get_close_matches(path, model_zoo.list_models(), n=1) if os.sep not in path else []
            hint = f" (did you mean the model-zoo entry vit_adapter://{close[0]}?)" if close else ""
            raise CheckpointNotFoundError(f"checkpoint not found: {local}{hint}")
        return local

    def _load_file(self, filename: str) -> Dict[str, Any]:
        raw, kind = read_checkpoint(filename, allow_unsafe_pickle=self.allow_unsafe_pickle)
        if not isinstance(raw, Mapping):
            raise _corrupt_error(filename, f"it holds a {type(raw).__name__}, not a dict of weights")
        if kind == "pickle":  # detectron2 / Detectron model-zoo conventions
            return self._wrap_pkl(dict(raw), filename)
        if filename.endswith(".pyth"):  # pycls
            if "model_state" not in raw:
                raise CheckpointMismatchError(f"{filename}: pycls checkpoints must contain 'model_state'")
            check_weights(raw["model_state"], filename, "'model_state'")
            sd = {k: v for k, v in raw["model_state"].items() if not k.endswith("num_batches_tracked")}
            return {"model": sd, "__author__": "pycls", "matching_heuristics": True}
        raw = dict(raw)
        if isinstance(raw.get("state_dict"), Mapping) and is_official_state_dict(raw["state_dict"]):
            check_weights(raw["state_dict"], filename, "'state_dict'")
            return {"model": raw, "__vit_adapter_format__": "official_mmdet"}
        for key in ("model", "module", "state_dict"):  # timm/DeiT/MAE/BEiT/detectron2 wrappers
            if isinstance(raw.get(key), Mapping) and all(isinstance(k, str) for k in raw[key]):
                inner = raw.pop(key)
                check_weights(inner, filename, f"{key!r}")
                if is_official_state_dict(inner):
                    return {"model": {"state_dict": inner}, "__vit_adapter_format__": "official_mmdet"}
                raw["model"] = inner
                return raw
        for key in ("model", "state_dict"):
            if key in raw:  # present, but not a dict of str keys
                check_weights(raw[key], filename, f"{key!r}")
        if raw and all(isinstance(v, (torch.Tensor, np.ndarray)) for v in raw.values()):
            check_weights(raw, filename, "the state dict")
            if is_official_state_dict(raw):
                return {"model": {"state_dict": raw}, "__vit_adapter_format__": "official_mmdet"}
            return {"model": raw}
        raise _corrupt_error(
            filename,
            f"no weights found: top-level keys {sorted(map(str, raw))[:10]}; expected a state dict "
            "or a dict with 'model' / 'state_dict'",
        )

    @staticmethod
    def _wrap_pkl(data: Dict[str, Any], filename: str) -> Dict[str, Any]:
        if "model" in data and "__author__" in data:
            check_weights(data["model"], filename, "'model'")
            return data
        what = "'blobs'" if "blobs" in data else "the state dict"
        data = data.get("blobs", data)
        check_weights(data, filename, what)
        data = {k: v for k, v in data.items() if not k.endswith("_momentum")}
        return {"model": data, "__author__": "Caffe2", "matching_heuristics": True}

    def _load_model(self, checkpoint: Dict[str, Any]):
        if checkpoint.get("matching_heuristics", False):
            self._convert_ndarray_to_tensor(checkpoint["model"])
            # (keys are renamed later, by detectron2's heuristics: check every tensor)
            self._raise_if_non_finite(checkpoint["model"], self.model.state_dict(), model_keys_only=False)
            self.last_report = {"format": "detectron2_heuristics"}
            incompatible = super()._load_model(checkpoint)  # renames by detectron2's heuristics
            fit = Fit(
                shapes=[(k, tuple(a), tuple(b)) for k, a, b in incompatible.incorrect_shapes],
                missing=[k for k in incompatible.missing_keys if not DERIVED_KEYS.search(k)],
            )
            self._raise_if_incomplete(fit, self.model.state_dict())
            return incompatible
        model_sd = self.model.state_dict()
        vit_prefix, vit = find_vit(self.model)
        fmt = checkpoint.pop("__vit_adapter_format__", None)
        sd = checkpoint["model"]
        report: Dict[str, Any] = {"dropped": [], "pos_embed_resized": None, "notes": []}

        if fmt == "official_mmdet":
            try:
                sd, conv = convert_official_state_dict(
                    sd, backbone_prefix=vit_prefix or "backbone.bottom_up.",
                    cascade_mask_stage=cascade_mask_stage_for(model_sd),
                )
            except ValueError as e:
                raise CheckpointMismatchError(f"official checkpoint {self._source}: {e}") from None
            self._convert_ndarray_to_tensor(sd)
            report["notes"] += conv["notes"]
            report["dropped"] += conv.get("dropped", [])
            sd = self._to_input_format(sd, [vit_prefix + "patch_embed.proj.weight", vit_prefix + "spm.stem.0.weight"], report)
        else:
            sd = {k[len("module."):] if k.startswith("module.") else k: v for k, v in sd.items()}
            self._convert_ndarray_to_tensor(sd)  # numpy arrays (old / .pkl checkpoints) -> tensors
            prefix = _imagenet_vit_prefix(sd)
            is_d2 = sum(k in model_sd for k in sd) >= max(1, len(sd) // 2)
            if vit is not None and prefix is not None and not is_d2:
                fmt = "imagenet_vit"
                sd = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
                try:
                    sd, conv = convert_imagenet_vit_state_dict(sd, vit, self.patch_kernel_resize)
                except ValueError as e:  # e.g. DINOv2 ViT-g (SwiGLU MLP)
                    raise CheckpointMismatchError(f"ImageNet checkpoint {self._source}: {e}") from None
                report.update(conv)
                sd = {vit_prefix + k: v for k, v in sd.items()}
                sd = self._to_input_format(sd, [vit_prefix + "patch_embed.proj.weight"], report)
            else:
                fmt = "detectron2"
        report["format"] = fmt

        report["skipped_shapes"] = self._check_fit(sd, model_sd, vit_prefix, vit, fmt).class_skips
        self._raise_if_non_finite(sd, model_sd)
        checkpoint["model"] = sd
        incompatible = super()._load_model(checkpoint)
        report["loaded"] = sorted(k for k in sd if k in model_sd)
        report["missing"] = list(incompatible.missing_keys)
        report["unexpected"] = list(incompatible.unexpected_keys)
        self.last_report = report
        self._log_report(report, vit_prefix)
        return incompatible

    def _check_fit(self, sd, model_sd, vit_prefix, vit, fmt) -> Fit:
        """The one validation of a (converted) state dict against the model, before loading:
        shapes always; an official detector must fill the whole model and nothing else; a
        deeper ViT than the model's is refused; at least one tensor must belong to the model;
        with ``require_complete`` every model tensor must be provided."""
        fit = compare(sd, model_sd, allow_class_change=not self.require_complete)
        source = self._source or "<checkpoint>"
        official = fmt == "official_mmdet"
        hint = _size_hint(sd, vit_prefix, vit)
        if official and not hint:
            hint = "another detector than the config's? (e.g. a Cascade checkpoint needs the cascade config)"
        deeper = [k for k in fit.unknown if k.startswith(vit_prefix + "blocks.")] if fmt != "detectron2" else []
        if deeper and not fit.shapes:  # deeper checkpoint than model, all widths equal
            fit.shapes = [(k, tuple(sd[k].shape), ("absent",)) for k in deeper]
        err = fit_error(source, fit, model_sd, unknown=official, missing=official, hint=hint, state_dict=sd)
        if err is not None:
            raise err
        if model_sd and len(fit.unknown) == len(sd):
            example = f" (e.g. {sorted(sd)[0]!r})" if sd else ""
            raise CheckpointMismatchError(
                f"checkpoint {source} has no tensor of this model: none of its {len(sd)} keys{example} "
                f"is a model key (e.g. {sorted(model_sd)[0]!r}); is it a checkpoint of another model?"
            )
        self._raise_if_incomplete(fit, model_sd)
        return fit

    def _raise_if_non_finite(self, sd, model_sd, model_keys_only=True) -> None:
        bad = non_finite_tensors(sd, model_sd, model_keys_only)
        if bad:
            shown = ", ".join(bad[:5]) + (f", and {len(bad) - 5} more" if len(bad) > 5 else "")
            raise NonFiniteCheckpointError(
                f"checkpoint {self._source or '<checkpoint>'} holds non-finite weights in {len(bad)} tensor(s): "
                f"{shown}; refusing to load it (a training would diverge at once, an evaluation would "
                "predict nothing): use an earlier checkpoint of the run"
            )

    def _raise_if_incomplete(self, fit: Fit, model_sd) -> None:
        """``require_complete``: every model tensor loaded with its shape (class skips included)."""
        if not self.require_complete:
            return
        err = fit_error(
            self._source or "<checkpoint>",
            Fit(shapes=fit.shapes, box_layout=fit.box_layout, missing=fit.missing),
            model_sd,
            missing=True,
            hint="the model would run with these tensors at their random initialisation; "
            "use the checkpoint trained with this config (require_complete: --eval-only, predict, export)",
        )
        if err is not None:
            raise err

    def _to_input_format(self, sd, first_conv_keys: Iterable[str], report) -> Dict[str, torch.Tensor]:
        """Checkpoints from ImageNet / mmdetection expect RGB input; flip for a BGR model."""
        if getattr(self.model, "input_format", "RGB") != "BGR":
            return sd
        for key in first_conv_keys:
            if key in sd and sd[key].dim() == 4 and sd[key].shape[1] == 3:
                sd[key] = sd[key].flip(1)
                report["notes"].append(f"{key}: input channels flipped RGB -> BGR (model.input_format='BGR')")
        return sd

    def _log_report(self, report: Dict[str, Any], vit_prefix: str):
        fmt = report["format"]
        self.logger.info(
            "Loaded %d tensors (%s checkpoint%s).",
            len(report["loaded"]),
            fmt,
            f" from {self._source}" if self._source else "",
        )
        if report["pos_embed_resized"]:
            (og, ng) = report["pos_embed_resized"]
            self.logger.info("pos_embed resized from a %dx%d to a %dx%d grid.", *og, *ng)
        if report["dropped"]:
            self.logger.info(
                "Checkpoint keys not used by a detector (dropped): %s", ", ".join(report["dropped"])
            )
        for note in report["notes"]:
            self.logger.info(note)
        if fmt == "imagenet_vit" and report["missing"]:
            vit_missing = [k for k in report["missing"] if k.startswith(vit_prefix) and self._is_vit_key(k, vit_prefix)]
            if vit_missing:
                self.logger.warning(
                    "ViT parameters not in the ImageNet checkpoint (they keep their init): %s",
                    ", ".join(vit_missing),
                )
            self.logger.info(
                "%d adapter / neck / head tensors keep their initialisation (expected for ImageNet init).",
                len(report["missing"]) - len(vit_missing),
            )

    @staticmethod
    def _is_vit_key(key: str, vit_prefix: str) -> bool:
        rest = key[len(vit_prefix):]
        return rest.startswith(("patch_embed.", "pos_embed", "blocks."))

    # ---- resuming
    def has_checkpoint(self) -> bool:
        """Whether ``save_dir/last_checkpoint`` exists; CheckpointError if it is not a file
        (detectron2 would log "No checkpoint found" and train from scratch with the
        resumed iteration, then crash in the LR scheduler)."""
        tag = os.path.join(self.save_dir, "last_checkpoint")
        if self._is_local(self.save_dir) and os.path.lexists(tag) and not os.path.isfile(tag):
            raise CheckpointError(f"{tag} is not a file (a folder?): cannot resume from it; remove it to start over")
        return super().has_checkpoint()

    # ---- saving
    def save(self, name: str, **kwargs: Any) -> None:
        """Like :meth:`Checkpointer.save`, but the file appears complete or not at all."""
        if not self.save_dir or not self.save_to_disk:
            return
        data = {"model": self.model.state_dict()}
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        data.update(kwargs)
        basename = f"{name}.pth"
        save_file = os.path.join(self.save_dir, basename)
        if os.path.basename(save_file) != basename:
            raise ValueError(f"checkpoint name must be a plain file name, got {name!r}")
        self.logger.info("Saving checkpoint to %s", save_file)
        if self._is_local(self.save_dir):
            os.makedirs(self.save_dir, exist_ok=True)
            for stale in remove_stale_temp_files(self.save_dir, lambda t: t.endswith(".pth") or t == "last_checkpoint"):
                self.logger.info("Removed %s (left by an interrupted save)", stale)
            atomic_torch_save(data, save_file)
        else:  # remote storage (iopath handler): no rename available
            with self.path_manager.open(save_file, "wb") as f:
                torch.save(data, f)
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        save_file = os.path.join(self.save_dir, "last_checkpoint")
        if self._is_local(self.save_dir):
            atomic_write_text(save_file, last_filename_basename)
        else:
            super().tag_last_checkpoint(last_filename_basename)

    @staticmethod
    def _is_local(path: str) -> bool:
        return "://" not in path


def load_for_inference(model: nn.Module, weights: str, **kwargs) -> Dict[str, Any]:
    """Load `weights` into `model` for evaluation / prediction / export: every model
    tensor must come from the checkpoint (``ViTAdapterCheckpointer(require_complete=True)``),
    else :class:`CheckpointMismatchError` names what is missing. Returns the
    checkpointer's ``last_report``. `kwargs` go to :class:`ViTAdapterCheckpointer`."""
    checkpointer = ViTAdapterCheckpointer(model, require_complete=True, **kwargs)
    checkpointer.load(weights)
    return checkpointer.last_report
