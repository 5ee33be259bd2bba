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
  dataset), those are skipped with a warning as detectron2 does;
* resolves model-zoo names (``vit_adapter://<name>`` or ``<name>``) and
  verifies the sha256 of registered files (:mod:`vit_adapter.checkpoint.model_zoo`);
* saves atomically: the checkpoint is written to a temporary file in the same
  directory, fsync'd and renamed over the target; ``last_checkpoint`` is
  rewritten the same way, only after the checkpoint is complete.
"""
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
from vit_adapter.checkpoint.io import (
    ALLOW_UNSAFE_PICKLE_ENV,
    CheckpointChecksumError,
    CheckpointError,
    CheckpointMismatchError,
    CheckpointNotFoundError,
    CorruptCheckpointError,
    UnsafeCheckpointError,
    _allow_unsafe_from_env,
    atomic_torch_save,
    atomic_write_text,
    load_augreg_npz,
    load_checkpoint_file,
)
from vit_adapter.checkpoint.official import (
    BBOX_PRED_HINT,
    cascade_mask_stage_for,
    convert_official_state_dict,
    is_official_state_dict,
)
from vit_adapter.modeling.vit import VisionTransformer

__all__ = [
    "ALLOW_UNSAFE_PICKLE_ENV",
    "CheckpointChecksumError",
    "CheckpointError",
    "CheckpointMismatchError",
    "CheckpointNotFoundError",
    "CorruptCheckpointError",
    "UnsafeCheckpointError",
    "ViTAdapterCheckpointer",
    "atomic_torch_save",
    "atomic_write_text",
    "convert_imagenet_vit_state_dict",
    "find_vit",
    "load_augreg_npz",
    "load_checkpoint_file",
]

logger = logging.getLogger(__name__)

# Predictor layers whose shape depends on the dataset's classes: a mismatch there
# is the usual fine-tuning case and is skipped with a warning (detectron2's behaviour).
CLASS_DEPENDENT_KEYS = re.compile(
    r"(^|\.)(box_predictor(\.\d+)?\.(cls_score|bbox_pred)|mask_head(\.\d+)?\.predictor)\.(weight|bias)$"
)
_SIZE_NAMES = {192: "T", 384: "S", 768: "B", 1024: "L"}


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


def _mismatch_error(
    source: str,
    bad: List[Tuple[str, Tuple[int, ...], Tuple[int, ...]]],
    state_dict: Mapping[str, Any],
    model: nn.Module,
    vit_prefix: str,
    vit: Optional[VisionTransformer],
    extra_hint: str = "",
) -> CheckpointMismatchError:
    lines = [f"  {k}: checkpoint {tuple(a)} vs model {tuple(b)}" for k, a, b in bad[:20]]
    if len(bad) > 20:
        lines.append(f"  ... and {len(bad) - 20} more")
    hint = ""
    ck = _vit_size_of(state_dict, vit_prefix)
    if ck is not None and vit is not None:
        from vit_adapter.modeling.backbone import ViTAdapter

        model_adapter = isinstance(vit, ViTAdapter)
        m_dim, m_depth = vit.embed_dim, len(vit.blocks)
        c_dim, c_depth, c_adapter = ck
        if (c_dim, c_depth) != (m_dim, m_depth):
            hint = (
                f"\nhint: checkpoint looks like {_size_name(c_dim, c_depth, c_adapter or model_adapter)} "
                f"(embed {c_dim}, depth {c_depth}) but the model is "
                f"{_size_name(m_dim, m_depth, model_adapter)} (embed {m_dim}, depth {m_depth}): "
                "use the config of the checkpoint's size, or the checkpoint of the config's size."
            )
    if extra_hint:
        hint += "\nhint: " + extra_hint
    return CheckpointMismatchError(
        f"checkpoint {source} does not fit the model: {len(bad)} tensor(s) of another shape{hint}\n"
        "parameter: checkpoint shape vs model shape\n" + "\n".join(lines)
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
        **checkpointables,
    ):
        super().__init__(model, save_dir, save_to_disk=save_to_disk, **checkpointables)
        self.patch_kernel_resize = patch_kernel_resize
        self.allow_unsafe_pickle = _allow_unsafe_from_env() if allow_unsafe_pickle is None else allow_unsafe_pickle
        self.last_report: Dict[str, Any] = {}
        self._source = ""

    # ---- loading
    def load(self, path: str, checkpointables: Optional[List[str]] = None) -> Dict[str, Any]:
        if path:
            path, sha256 = model_zoo.resolve(path)
            if sha256 is not None:
                local = self.path_manager.get_local_path(path)
                try:
                    model_zoo.verify_sha256(local, sha256)
                except model_zoo.ChecksumError as e:
                    raise CheckpointChecksumError(str(e)) from None
                path = local
            if not os.path.isfile(path) and "://" not in path and comm.get_world_size() == 1:
                # (several processes: detectron2 decides, it tolerates files only on the main worker)
                raise CheckpointNotFoundError(f"checkpoint not found: {path}")
        self._source = path
        return super().load(path, checkpointables=checkpointables)

    def _load_file(self, filename: str) -> Dict[str, Any]:
        raw = load_checkpoint_file(filename, allow_unsafe_pickle=self.allow_unsafe_pickle)
        if not isinstance(raw, Mapping):
            raise CheckpointMismatchError(f"{filename}: expected a dict-like checkpoint, got {type(raw).__name__}")
        if filename.endswith(".pkl"):  # detectron2 / Detectron model-zoo conventions
            return self._wrap_pkl(dict(raw))
        if filename.endswith(".pyth"):  # pycls
            if "model_state" not in raw:
                raise CheckpointMismatchError(f"{filename}: pycls checkpoints must contain 'model_state'")
            sd = {k: v for k, v in raw["model_state"].items() if not k.endswith("num_batches_tracked")}
            return {"model": sd, "__author__": "pycls", "matching_heuristics": True}
        raw = dict(raw)
        if isinstance(raw.get("state_dict"), Mapping) and is_official_state_dict(raw["state_dict"]):
            return {"model": raw, "__vit_adapter_format__": "official_mmdet"}
        for key in ("model", "module", "state_dict"):  # timm/DeiT/MAE/BEiT/detectron2 wrappers
            if isinstance(raw.get(key), Mapping) and all(isinstance(k, str) for k in raw[key]):
                inner = raw.pop(key)
                if is_official_state_dict(inner):
                    return {"model": {"state_dict": inner}, "__vit_adapter_format__": "official_mmdet"}
                raw["model"] = inner
                return raw
        if not raw or all(isinstance(v, (torch.Tensor, np.ndarray)) for v in raw.values()):
            if is_official_state_dict(raw):
                return {"model": {"state_dict": raw}, "__vit_adapter_format__": "official_mmdet"}
            return {"model": raw}
        raise CheckpointMismatchError(
            f"{filename}: unrecognised checkpoint layout (top-level keys: {sorted(raw)[:10]}); "
            "expected a state dict or a dict with 'model' / 'state_dict'"
        )

    @staticmethod
    def _wrap_pkl(data: Dict[str, Any]) -> Dict[str, Any]:
        if "model" in data and "__author__" in data:
            return data
        if "blobs" in data:
            data = data["blobs"]
        data = {k: v for k, v in data.items() if not k.endswith("_momentum")}
        return {"model": data, "__author__": "Caffe2", "matching_heuristics": True}

    def _load_model(self, checkpoint: Dict[str, Any]):
        if checkpoint.get("matching_heuristics", False):
            self.last_report = {"format": "detectron2_heuristics"}
            return super()._load_model(checkpoint)
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

        self._check_shapes(sd, model_sd, vit_prefix, vit, report)
        if fmt == "official_mmdet":
            self._check_complete(sd, model_sd)
        checkpoint["model"] = sd
        incompatible = super()._load_model(checkpoint)
        report["loaded"] = sorted(k for k in sd if k in model_sd)
        report["missing"] = list(incompatible.missing_keys)
        report["unexpected"] = list(incompatible.unexpected_keys)
        self.last_report = report
        self._log_report(report, vit_prefix)
        return incompatible

    def _to_input_format(self, sd, first_conv_keys: Iterable[str], report) -> Dict[str, torch.Tensor]:
        """Checkpoints from ImageNet / mmdetection expect RGB input; flip for a BGR model."""
        if getattr(self.model, "input_format", "RGB") != "BGR":
            return sd
        for key in first_conv_keys:
            if key in sd and sd[key].dim() == 4 and sd[key].shape[1] == 3:
                sd[key] = sd[key].flip(1)
                report["notes"].append(f"{key}: input channels flipped RGB -> BGR (model.input_format='BGR')")
        return sd

    def _check_shapes(self, sd, model_sd, vit_prefix, vit, report):
        bad, skipped = [], []
        for k, v in list(sd.items()):
            if k in model_sd and hasattr(v, "shape") and tuple(v.shape) != tuple(model_sd[k].shape):
                if CLASS_DEPENDENT_KEYS.search(k):
                    skipped.append(k)  # fvcore skips and warns about these
                else:
                    bad.append((k, tuple(v.shape), tuple(model_sd[k].shape)))
        # Same classes (cls_score fits) but another box-regression layout (class-specific vs
        # agnostic): not a fine-tuning case, the boxes would be decoded wrongly.
        layout = [k for k in skipped if ".bbox_pred." in k and k.replace(".bbox_pred.", ".cls_score.") not in skipped]
        if layout:
            skipped = [k for k in skipped if k not in layout]
            bad += [(k, tuple(sd[k].shape), tuple(model_sd[k].shape)) for k in layout]
        unexpected_blocks = [k for k in sd if k not in model_sd and k.startswith(vit_prefix + "blocks.")]
        if bad or (unexpected_blocks and report.get("format") != "detectron2"):
            if not bad:  # deeper checkpoint than model, all widths equal
                bad = [(k, tuple(sd[k].shape), ("absent",)) for k in sorted(unexpected_blocks)]
            raise _mismatch_error(
                self._source or "<checkpoint>", bad, sd, self.model, vit_prefix, vit,
                extra_hint=BBOX_PRED_HINT if layout else "",
            )
        report["skipped_shapes"] = skipped

    def _check_complete(self, sd, model_sd):
        """A whole official detector must fill the whole model: else it is another architecture."""
        unexpected = sorted(k for k in sd if k not in model_sd)
        missing = sorted(k for k in model_sd if k not in sd)
        if unexpected or missing:
            lines = [f"  not in the model: {k}" for k in unexpected[:15]]
            lines += [f"  not in the checkpoint: {k}" for k in missing[:15]]
            raise CheckpointMismatchError(
                f"official checkpoint {self._source} is another detector than the config's "
                f"({len(unexpected)} tensor(s) not in the model, {len(missing)} model tensor(s) not in the "
                "checkpoint; e.g. a Cascade checkpoint needs the cascade config):\n" + "\n".join(lines)
            )

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
