"""How a state dict fits a model: one comparison (:func:`compare`) and one error
(:func:`fit_error`), used by the checkpointer for every checkpoint format and by
the official-checkpoint converter.

What may differ depends on the use:

* fine-tuning init: the class-dependent predictor layers (classifier, box
  deltas, mask logits) may have another class count (skipped, as detectron2
  does); an ImageNet ViT leaves the adapter / neck / heads missing;
* a whole detector for inference (``--eval-only``, predict, export:
  ``require_complete``): every model tensor must come from the checkpoint with
  its shape, so nothing runs with random weights.
"""
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Tuple

from vit_adapter.checkpoint.io import CheckpointMismatchError

__all__ = ["CLASS_DEPENDENT_KEYS", "DERIVED_KEYS", "Fit", "compare", "fit_error", "missing_modules"]

# Predictor layers whose shape depends on the dataset's classes.
CLASS_DEPENDENT_KEYS = re.compile(
    r"(^|\.)(box_predictor(\.\d+)?\.(cls_score|bbox_pred)|mask_head(\.\d+)?\.predictor)\.(weight|bias)$"
)
# model state-dict entries no checkpoint has to provide (rebuilt from the config)
DERIVED_KEYS = re.compile(r"(^|\.)(cell_anchors\.\d+|num_batches_tracked)$")

BBOX_PRED_HINT = (
    "box_predictor.bbox_pred differs: the official heads regress class-specific boxes "
    "(4 x num_classes outputs, reg_class_agnostic=False); build the box predictors with "
    "cls_agnostic_bbox_reg=False (detectron2's default for Mask R-CNN; for Cascade Mask R-CNN "
    "use configs/common/models/cascade_mask_rcnn_vit_adapter.py, whose "
    "ClassSpecificCascadeROIHeads supports it: detectron2's CascadeROIHeads only supports "
    "class-agnostic regression)."
)


@dataclass
class Fit:
    """Differences between a checkpoint state dict and the model's.

    Attributes:
        shapes: (key, checkpoint shape, model shape) of tensors that cannot be
            loaded (class-dependent ones included only when class changes are
            not allowed, or when the class count is equal but the box layout differs).
        class_skips: class-dependent keys of another class count (skipped when allowed).
        box_layout: some ``bbox_pred`` differs while its ``cls_score`` fits
            (class-specific vs class-agnostic regression).
        unknown: checkpoint keys not in the model.
        missing: model keys not in the checkpoint (derived buffers excluded).
    """

    shapes: List[Tuple[str, Tuple[int, ...], Tuple[int, ...]]] = field(default_factory=list)
    class_skips: List[str] = field(default_factory=list)
    box_layout: bool = False
    unknown: List[str] = field(default_factory=list)
    missing: List[str] = field(default_factory=list)


def _shape(v) -> Tuple[int, ...]:
    return tuple(getattr(v, "shape", ()))


def compare(state_dict: Mapping[str, Any], model_state_dict: Mapping[str, Any], *, allow_class_change: bool = True) -> Fit:
    """Compare names and shapes (nothing is loaded)."""
    fit = Fit()
    for k, v in state_dict.items():
        if k not in model_state_dict:
            fit.unknown.append(k)
        elif _shape(v) != _shape(model_state_dict[k]):
            if allow_class_change and CLASS_DEPENDENT_KEYS.search(k):
                fit.class_skips.append(k)
            else:
                fit.shapes.append((k, _shape(v), _shape(model_state_dict[k])))
    # Same classes (cls_score fits) but another box-regression layout: not a fine-tuning
    # case, the boxes would be decoded wrongly.
    in_shapes = {k for k, _, _ in fit.shapes}
    differ = in_shapes | set(fit.class_skips)
    layout = sorted(k for k in differ if ".bbox_pred." in k and k.replace(".bbox_pred.", ".cls_score.") not in differ)
    if layout:
        fit.box_layout = True
        fit.class_skips = [k for k in fit.class_skips if k not in layout]
        fit.shapes += [(k, _shape(state_dict[k]), _shape(model_state_dict[k])) for k in layout if k not in in_shapes]
    fit.unknown.sort()
    fit.missing = sorted(k for k in model_state_dict if k not in state_dict and not DERIVED_KEYS.search(k))
    return fit


def _prefixes(key: str):
    parts = key.split(".")
    return [".".join(parts[:i]) + "." for i in range(1, len(parts))]


def missing_modules(keys: List[str], owner: Mapping[str, Any], other: Mapping[str, Any] = None) -> List[Tuple[str, int]]:
    """`keys` (all from `owner`) grouped by the shortest module prefix whose tensors in
    `owner` are all in `keys` and that names no module of `other`, with counts: e.g.
    model tensors missing from a checkpoint, ``[("roi_heads.mask_head.", 10),
    ("backbone.bottom_up.level_embed", 1)]``."""
    total: Dict[str, int] = {}
    for k in owner:
        for p in _prefixes(k):
            total[p] = total.get(p, 0) + 1
    taken = {p for k in (other or ()) for p in _prefixes(k)}
    absent: Dict[str, int] = {}
    for k in set(keys):
        for p in _prefixes(k):
            absent[p] = absent.get(p, 0) + 1
    groups: Dict[str, int] = {}
    for k in sorted(set(keys)):
        prefix = next((p for p in _prefixes(k) if absent.get(p) == total.get(p) and p not in taken), k)
        groups[prefix] = groups.get(prefix, 0) + 1
    return sorted(groups.items())


def fit_error(
    source: str,
    fit: Fit,
    model_state_dict: Mapping[str, Any],
    *,
    unknown: bool = False,
    missing: bool = False,
    hint: str = "",
    state_dict: Mapping[str, Any] = None,
):
    """A :class:`CheckpointMismatchError` listing what does not fit, or None when
    nothing does. Shape differences always count; `unknown` / `missing` say whether
    checkpoint keys outside the model / model keys outside the checkpoint do
    (unknown keys are grouped by module when the checkpoint's `state_dict` is given)."""
    unknown_keys = fit.unknown if unknown else []
    unknown_groups = (
        missing_modules(unknown_keys, state_dict, model_state_dict)
        if state_dict is not None
        else [(k, 1) for k in unknown_keys]
    )
    groups = missing_modules(fit.missing, model_state_dict, state_dict) if missing else []
    if not (fit.shapes or unknown_keys or groups):
        return None
    lines = [f"  {k}: checkpoint {a} vs model {b}" for k, a, b in fit.shapes[:20]]
    if len(fit.shapes) > 20:
        lines.append(f"  ... and {len(fit.shapes) - 20} more of another shape")
    lines += [f"  not in the model: {p.rstrip('.')}" + (f" ({n} tensors)" if n > 1 else "") for p, n in unknown_groups[:15]]
    if len(unknown_groups) > 15:
        lines.append(f"  ... and {len(unknown_groups) - 15} more not in the model")
    lines += [
        f"  not in the checkpoint: {p.rstrip('.')}" + (f" ({n} tensors)" if n > 1 else "") for p, n in groups[:15]
    ]
    if len(groups) > 15:
        lines.append(f"  ... and {len(groups) - 15} more modules not in the checkpoint")
    counts = [f"{len(fit.shapes)} tensor(s) of another shape"] if fit.shapes else []
    if unknown_keys:
        counts.append(f"{len(unknown_keys)} tensor(s) not in the model")
    if groups:
        counts.append(f"{len(fit.missing)} model tensor(s) not in the checkpoint")
    hints = ([hint] if hint else []) + ([BBOX_PRED_HINT] if fit.box_layout else [])
    return CheckpointMismatchError(
        f"checkpoint {source} does not fit the model ({', '.join(counts)})"
        + "".join(f"\nhint: {h}" for h in hints)
        + "\n" + "\n".join(lines)
    )
