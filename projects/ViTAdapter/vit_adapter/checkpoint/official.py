"""Official ViT-Adapter checkpoints (mmdetection 2.x) -> detectron2 parameter names.

The official release (czczup/ViT-Adapter, ``detection/``) saves
``{"meta": ..., "state_dict": {...}}``. This module renames every tensor of a
Mask R-CNN or Cascade Mask R-CNN state dict to the detectron2 model built from
our configs, and refuses (``ValueError``) any key it cannot place. The
release's segmentation Mask2Former (``segmentation/``) converts with
:func:`convert_official_mask2former_state_dict` (table: ``MASK2FORMER_TO_D2_RULES``).

Name table (K, J = integers; ``<bb>`` = ``backbone.bottom_up.`` by default):

=================================================  ==================================================
official (mmdet)                                   detectron2 (ours)
=================================================  ==================================================
``backbone.<name>``                                ``<bb><name>`` (same names: spm.*, level_embed,
                                                   patch_embed.proj, pos_embed, blocks.N.*,
                                                   interactions.K.*, up, norm1..norm4)
``neck.lateral_convs.K.conv.{weight,bias}``        ``backbone.fpn_lateral{K+2}.{weight,bias}``
``neck.fpn_convs.K.conv.{weight,bias}``            ``backbone.fpn_output{K+2}.{weight,bias}``
``rpn_head.rpn_conv.*``                            ``proposal_generator.rpn_head.conv.*``
``rpn_head.rpn_cls.*``                             ``proposal_generator.rpn_head.objectness_logits.*``
``rpn_head.rpn_reg.*``                             ``proposal_generator.rpn_head.anchor_deltas.*``
``roi_head.bbox_head[.S].shared_convs.K.conv.*``   ``roi_heads.box_head[.S].conv{K+1}.*``
``roi_head.bbox_head[.S].shared_convs.K.bn.*``     ``roi_heads.box_head[.S].conv{K+1}.norm.*`` (also gn/ln)
``roi_head.bbox_head[.S].shared_fcs.K.*``          ``roi_heads.box_head[.S].fc{K+1}.*``
``roi_head.bbox_head[.S].fc_cls.*``                ``roi_heads.box_predictor[.S].cls_score.*``
``roi_head.bbox_head[.S].fc_reg.*``                ``roi_heads.box_predictor[.S].bbox_pred.*``
``roi_head.mask_head[.S].convs.K.conv.*``          ``roi_heads.mask_head[.S].mask_fcn{K+1}.*``
``roi_head.mask_head[.S].upsample.*``              ``roi_heads.mask_head[.S].deconv.*``
``roi_head.mask_head[.S].conv_logits.*``           ``roi_heads.mask_head[.S].predictor.*``
``roi_head.mask_head.S.*`` (cascade, S = 0..2)     all stages kept (``cascade_mask_stage=None``, the
                                                   configs' per-stage heads), or one stage as the
                                                   single head of detectron2's cascade (the others
                                                   dropped, listed in the report)
=================================================  ==================================================

Conventions checked (mmdetection 2.x vs detectron2; the tensors need no
re-ordering, only renaming):

* classes: mmdet 2.x ``fc_cls`` has ``num_classes + 1`` outputs with the
  background LAST; detectron2's ``cls_score`` also puts background last. COCO's
  80 classes are in category-id order in both (checked against
  ``meta["CLASSES"]`` when the checkpoint has it).
* box deltas: both regress (dx, dy, dw, dh) with w = x2 - x1 (no +1).
  mmdet divides targets by ``target_stds``; detectron2 multiplies by
  ``Box2BoxTransform.weights``: stds (0.1, 0.1, 0.2, 0.2) == weights
  (10, 10, 5, 5); cascade stages 2/3 (0.05, 0.05, 0.1, 0.1) == (20, 20, 10, 10)
  and (0.033, 0.033, 0.067, 0.067) ~= (30, 30, 15, 15) (1/0.033 = 30.3,
  1/0.067 = 14.9: detectron2's stage-3 weights differ by < 1.5%). Class-specific
  regression (``reg_class_agnostic=False``) is laid out class-major
  ``[c0(dx,dy,dw,dh), c1(...), ...]`` in both; ``fc_reg`` has 4 outputs when
  class agnostic (the r50 cascade base) and ``4 * num_classes`` otherwise (the
  ViT-Adapter cascade configs: 4conv-1fc head with SyncBN, class-specific,
  GIoU loss).
* RPN: one objectness logit per anchor (sigmoid), deltas channel ``4a + k``;
  anchors: scale 8 x stride (32..512), ratios (0.5, 1, 2) = h / w in that
  order (mmdet is ratio-major and has one scale, detectron2 size-major with one
  size: the same order), centred on ``stride * (i, j)`` (center_offset 0 ==
  detectron2 ``offset=0.0``); RPN target stds 1.0 == detectron2 RPN weights 1.0.
* FPN: 1x1 lateral + 3x3 output convs, nearest top-down upsampling, P6 by
  max-pool(k=1, s=2) on P5 (``num_outs=5``, no extra convs) == detectron2
  ``LastLevelMaxPool``.
* RoI heads: RoIAlign ``aligned=True``, ``sampling_ratio=0`` (detectron2
  ``ROIAlignV2``); level = floor(log2(sqrt(area) / 56)) (mmdet
  ``finest_scale=56``) == detectron2's floor(4 + log2(sqrt(area) / 224)) on
  p2..p5; boxes flattened channel-major (256 x 7 x 7) in both.
* Cascade: mmdetection builds one mask head per stage and averages the three
  stages' mask probabilities at test time; so does our cascade config
  (``ClassSpecificCascadeROIHeads(mask_heads=...)``), which receives all three.
  A model with detectron2's single cascade mask head gets one stage's head
  (mask AP can then move slightly). The released heads regress class-specific boxes; detectron2's
  ``CascadeROIHeads`` cannot, our ``vit_adapter.modeling.roi_heads.ClassSpecificCascadeROIHeads``
  (``configs/common/models/cascade_mask_rcnn_vit_adapter.py``) does.
* Input: the release normalises RGB with ImageNet mean / std (AugReg-L: 127.5);
  :func:`check_conventions` compares with the model and
  :class:`vit_adapter.checkpoint.checkpointer.ViTAdapterCheckpointer` flips the first
  convs' input channels for a BGR model.
"""
import re
from typing import Any, Dict, List, Mapping, Optional, Tuple

import torch

from vit_adapter.checkpoint.fit import BBOX_PRED_HINT, compare, fit_error

__all__ = [
    "BBOX_PRED_HINT",
    "cascade_mask_stage_for",
    "check_conventions",
    "check_segmentor_conventions",
    "convert_official_backbone",
    "convert_official_segmentor_state_dict",
    "is_official_segmentor_state_dict",
    "CASCADE_STAGE_BOX_STDS",
    "OFFICIAL_TO_D2_RULES",
    "convert_official_state_dict",
    "is_official_state_dict",
    "match_class_order",
    "official_box_stds_to_weights",
    "unwrap_official_checkpoint",
    "convert_official_mask2former_state_dict",
    "is_official_mask2former_state_dict",
    "MASK2FORMER_TO_D2_RULES",
]

# Official target_stds of the Mask R-CNN box head and the three cascade stages.
CASCADE_STAGE_BOX_STDS = (
    (0.1, 0.1, 0.2, 0.2),
    (0.05, 0.05, 0.1, 0.1),
    (0.033, 0.033, 0.067, 0.067),
)

_HEADS = ("neck.", "rpn_head.", "roi_head.")

# (regex on the official key, replacement); {K+1}/{K+2} are computed below.
# Order matters only in that the first match wins.
OFFICIAL_TO_D2_RULES: Tuple[Tuple[str, str], ...] = (
    (r"^neck\.lateral_convs\.([0-3])\.conv\.(weight|bias)$", r"backbone.fpn_lateral{+2:1}.\2"),
    (r"^neck\.fpn_convs\.([0-3])\.conv\.(weight|bias)$", r"backbone.fpn_output{+2:1}.\2"),
    (r"^rpn_head\.rpn_conv\.(weight|bias)$", r"proposal_generator.rpn_head.conv.\1"),
    (r"^rpn_head\.rpn_cls\.(weight|bias)$", r"proposal_generator.rpn_head.objectness_logits.\1"),
    (r"^rpn_head\.rpn_reg\.(weight|bias)$", r"proposal_generator.rpn_head.anchor_deltas.\1"),
    # box heads; (\.\d+)? is the cascade stage
    (
        r"^roi_head\.bbox_head(\.\d+)?\.shared_convs\.(\d+)\.conv\.(weight|bias)$",
        r"roi_heads.box_head\1.conv{+1:2}.\3",
    ),
    (
        r"^roi_head\.bbox_head(\.\d+)?\.shared_convs\.(\d+)\.(?:bn|gn|ln)\."
        r"(weight|bias|running_mean|running_var|num_batches_tracked)$",
        r"roi_heads.box_head\1.conv{+1:2}.norm.\3",
    ),
    (
        r"^roi_head\.bbox_head(\.\d+)?\.shared_fcs\.(\d+)\.(weight|bias)$",
        r"roi_heads.box_head\1.fc{+1:2}.\3",
    ),
    (r"^roi_head\.bbox_head(\.\d+)?\.fc_cls\.(weight|bias)$", r"roi_heads.box_predictor\1.cls_score.\2"),
    (r"^roi_head\.bbox_head(\.\d+)?\.fc_reg\.(weight|bias)$", r"roi_heads.box_predictor\1.bbox_pred.\2"),
    # mask heads; (\.\d+)? is the cascade stage (kept per stage, or reduced to one
    # head first, see `_select_cascade_mask_head`)
    (
        r"^roi_head\.mask_head(\.\d+)?\.convs\.(\d+)\.conv\.(weight|bias)$",
        r"roi_heads.mask_head\1.mask_fcn{+1:2}.\3",
    ),
    (r"^roi_head\.mask_head(\.\d+)?\.upsample\.(weight|bias)$", r"roi_heads.mask_head\1.deconv.\2"),
    (r"^roi_head\.mask_head(\.\d+)?\.conv_logits\.(weight|bias)$", r"roi_heads.mask_head\1.predictor.\2"),
)
_CASCADE_MASK = re.compile(r"^roi_head\.mask_head\.(\d+)\.(.+)$")
_DERIVED_BUFFER = re.compile(r"\.relative_position_index$")
_COMPILED_RULES = [(re.compile(p), r) for p, r in OFFICIAL_TO_D2_RULES]
_OFFSET_GROUP = re.compile(r"\{\+(\d+):(\d+)\}")


def official_box_stds_to_weights(stds) -> Tuple[float, ...]:
    """mmdet ``target_stds`` -> detectron2 ``Box2BoxTransform`` weights (1 / std)."""
    return tuple(1.0 / s for s in stds)


def cascade_mask_stage_for(model_state_dict: Mapping[str, Any]) -> Optional[int]:
    """``cascade_mask_stage`` for a model: None when it has per-stage mask heads
    (``roi_heads.mask_head.0.*``), else -1 (one head: the official last stage's)."""
    per_stage = any(k.startswith("roi_heads.mask_head.0.") for k in model_state_dict)
    return None if per_stage else -1


def unwrap_official_checkpoint(checkpoint: Mapping[str, Any]) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """Split an mmdet checkpoint into (state_dict, meta). Plain state dicts pass through."""
    if "state_dict" in checkpoint and isinstance(checkpoint["state_dict"], Mapping):
        return dict(checkpoint["state_dict"]), dict(checkpoint.get("meta") or {})
    return dict(checkpoint), {}


def is_official_state_dict(state_dict: Mapping[str, Any]) -> bool:
    """True for an mmdet detector state dict: ``backbone.*`` plus neck / rpn_head / roi_head keys."""
    keys = list(state_dict.keys())
    has_backbone = any(k.startswith("backbone.") for k in keys)
    has_heads = any(k.startswith(_HEADS) for k in keys)
    # detectron2's own names also start with "backbone." but never with the mmdet head names.
    return has_backbone and has_heads


def _rename_head_key(key: str) -> Optional[str]:
    for pattern, repl in _COMPILED_RULES:
        m = pattern.match(key)
        if m is None:
            continue

        def _offset(om, m=m):
            offset, group = int(om.group(1)), int(om.group(2))
            return str(int(m.group(group)) + offset)

        return m.expand(_OFFSET_GROUP.sub(_offset, repl))
    return None


def _check_classes(meta: Mapping[str, Any]) -> List[str]:
    """Compare meta["CLASSES"] with detectron2's COCO thing classes; return notes."""
    classes = meta.get("CLASSES")
    if not classes:
        return []
    try:
        from detectron2.data.datasets.builtin_meta import COCO_CATEGORIES
    except ImportError:  # pragma: no cover - detectron2 is a hard requirement of the package
        return []
    coco = [c["name"] for c in COCO_CATEGORIES if c["isthing"]]
    if list(classes) == coco:
        return ["meta CLASSES == detectron2 COCO thing classes (same order): no re-ordering"]
    return [
        f"meta CLASSES ({len(classes)} classes) differ from detectron2's COCO thing classes: "
        "class logits are kept in the checkpoint's order; register your dataset with the same order"
    ]


def _select_cascade_mask_head(
    state_dict: Mapping[str, Any], stage: Optional[int]
) -> Tuple[Dict[str, Any], List[str], Optional[int]]:
    """Keep one of mmdetection's per-stage cascade mask heads as the plain ``roi_head.mask_head``.

    mmdetection's CascadeRoIHead replicates a single ``mask_head`` dict into one
    FCNMaskHead per stage (``roi_head.mask_head.{0,1,2}.*``) and averages the
    stages' mask probabilities at test time; detectron2's CascadeROIHeads has one
    mask head, run on the last stage's boxes. `stage` None keeps every stage.
    Returns (state_dict, dropped keys, number of stages or None when the
    checkpoint has no per-stage mask heads).
    """
    stages = sorted({int(m.group(1)) for k in state_dict for m in [_CASCADE_MASK.match(k)] if m})
    if not stages or stage is None:
        return dict(state_dict), [], len(stages) or None
    keep = stages[stage]
    out, dropped = {}, []
    for key, value in state_dict.items():
        m = _CASCADE_MASK.match(key)
        if m is None:
            out[key] = value
        elif int(m.group(1)) == keep:
            out["roi_head.mask_head." + m.group(2)] = value
        else:
            dropped.append(key)
    return out, sorted(dropped), len(stages)


def convert_official_state_dict(
    checkpoint: Mapping[str, Any],
    *,
    backbone_prefix: str = "backbone.bottom_up.",
    target_state_dict: Optional[Mapping[str, torch.Tensor]] = None,
    cascade_mask_stage: Optional[int] = None,
    source: str = "(official)",
) -> Tuple[Dict[str, torch.Tensor], Dict[str, Any]]:
    """Rename an official ViT-Adapter detector checkpoint to detectron2 names.

    Args:
        checkpoint: the loaded file (``{"meta", "state_dict"}``) or its state dict.
        backbone_prefix: where the official ``backbone.*`` goes. ``backbone.bottom_up.``
            for our ViTAdapter inside detectron2's FPN.
        target_state_dict: the state dict of the model that will receive the
            weights. When given, the cls slot of ``pos_embed`` is dropped if the
            target has none, and the result must fill the target exactly: every
            key there with the same shape, every target tensor covered (else
            :class:`CheckpointMismatchError`, a ``ValueError``, listing them;
            :func:`vit_adapter.checkpoint.fit.fit_error`).
        cascade_mask_stage: Cascade Mask R-CNN only. None (default): every
            official per-stage mask head is kept (``roi_heads.mask_head.S.*``,
            our cascade config's per-stage heads). An int: that stage's head
            becomes the single mask head of detectron2's cascade (-1: the last
            stage, which sees the final boxes in both frameworks); the other
            stages' tensors are listed in ``report["dropped"]``. See
            :func:`cascade_mask_stage_for` to pick it from a model.

    Returns:
        (state_dict, report): renamed tensors, and a dict with ``num_converted``,
        ``by_part`` (counts per detectron2 top-level part), ``missing`` (always
        empty: a target that is not filled raises), ``dropped`` (official keys
        deliberately not converted), ``num_classes``,
        ``class_agnostic_box_reg`` (per stage) and ``notes``.

    Raises:
        ValueError: a key that no rule places (listed by name), or a
            mismatch with `target_state_dict`.
    """
    state_dict, meta = unwrap_official_checkpoint(checkpoint)
    state_dict, dropped, num_mask_stages = _select_cascade_mask_head(state_dict, cascade_mask_stage)
    out: Dict[str, torch.Tensor] = {}
    unplaced: List[str] = []
    for key, value in state_dict.items():
        if _DERIVED_BUFFER.search(key):  # BEiT-Adapter: derived from the grid, not stored by our model
            continue
        if key.startswith("backbone."):
            new_key = backbone_prefix + key[len("backbone."):]
        else:
            new_key = _rename_head_key(key)
        if new_key is None:
            unplaced.append(key)
            continue
        if new_key in out:
            raise ValueError(f"two official keys map to {new_key!r} (second: {key!r})")
        out[new_key] = value
    if unplaced:
        raise ValueError(
            f"{len(unplaced)} key(s) of the official checkpoint have no detectron2 counterpart "
            "(is this a Mask R-CNN / Cascade Mask R-CNN ViT-Adapter checkpoint?):\n  "
            + "\n  ".join(sorted(unplaced))
        )

    report: Dict[str, Any] = {"notes": _check_classes(meta), "missing": [], "dropped": dropped}
    if num_mask_stages and cascade_mask_stage is None:
        report["notes"].append(f"cascade: kept all {num_mask_stages} per-stage mask heads (as released)")
    elif num_mask_stages:
        report["notes"].append(
            f"cascade: kept the mask head of stage {cascade_mask_stage % num_mask_stages} of "
            f"{num_mask_stages} (mmdetection averages all stages' masks at test time; detectron2 "
            "runs one mask head): mask AP can differ slightly from the official number"
        )
    # class count and box regression layout, per (cascade) stage
    num_classes, agnostic = None, {}
    for key, value in out.items():
        if key.endswith("cls_score.weight"):
            num_classes = value.shape[0] - 1  # background last
        if key.endswith("bbox_pred.weight"):
            stage = key[len("roi_heads.box_predictor"):-len(".bbox_pred.weight")].lstrip(".") or "0"
            agnostic[stage] = value.shape[0] == 4
    report["num_classes"] = num_classes
    report["class_agnostic_box_reg"] = agnostic

    if target_state_dict is not None:
        pos_key = backbone_prefix + "pos_embed"
        if pos_key in out and pos_key in target_state_dict:
            have, want = out[pos_key], target_state_dict[pos_key]
            if have.shape[1] == want.shape[1] + 1 and have.shape[2] == want.shape[2]:
                out[pos_key] = have[:, 1:]  # target keeps no cls slot
        err = fit_error(
            source,
            compare(out, target_state_dict, allow_class_change=False),
            target_state_dict,
            unknown=True,
            missing=True,
            hint="another detector or size than the config's? (e.g. a Cascade checkpoint needs the cascade config)",
            state_dict=out,
        )
        if err is not None:
            raise err

    by_part: Dict[str, int] = {}
    for k in out:
        part = "backbone.bottom_up" if k.startswith(backbone_prefix) else k.split(".")[0]
        if k.startswith("backbone.fpn"):
            part = "backbone.fpn"
        by_part[part] = by_part.get(part, 0) + 1
    report["num_converted"] = len(out)
    report["by_part"] = by_part
    return out, report


def convert_official_backbone(
    checkpoint: Mapping[str, Any],
    *,
    backbone_prefix: str = "backbone.bottom_up.",
    target_state_dict: Optional[Mapping[str, torch.Tensor]] = None,
    source: str = "(official)",
) -> Tuple[Dict[str, torch.Tensor], Dict[str, Any]]:
    """The backbone of any release checkpoint, heads left out.

    For release detectors whose heads detectron2 does not express (HTC++ with
    its ExtraAttention neck, Mask2Former) and for the segmentation checkpoints
    (mmseg ``EncoderDecoder``: ``backbone.*``, ``decode_head.*``,
    ``auxiliary_head.*``): ``backbone.<name>`` -> ``<backbone_prefix><name>``
    (the release's names, ViT-Adapter or BEiT-Adapter); the derived
    ``relative_position_index`` buffers and every non-backbone key are dropped
    (``report["dropped"]``, counted per part in ``report["notes"]``).

    With `target_state_dict`, every backbone tensor of the target (keys under
    `backbone_prefix`) must be filled with its shape and nothing else given,
    else ``ValueError`` (:func:`vit_adapter.checkpoint.fit.fit_error`).
    """
    state_dict, _ = unwrap_official_checkpoint(checkpoint)
    out: Dict[str, torch.Tensor] = {}
    dropped: List[str] = []
    derived = 0
    for key, value in state_dict.items():
        if not key.startswith("backbone."):
            dropped.append(key)
        elif _DERIVED_BUFFER.search(key):
            derived += 1
        else:
            out[backbone_prefix + key[len("backbone."):]] = value
    if not out:
        raise ValueError(f"{source} has no backbone.* tensors (not a release detector / segmentor checkpoint?)")
    parts: Dict[str, int] = {}
    for key in dropped:
        parts[key.split(".")[0]] = parts.get(key.split(".")[0], 0) + 1
    notes = [f"backbone only: {len(out)} tensors; not converted: "
             + (", ".join(f"{p} ({n})" for p, n in sorted(parts.items())) or "nothing")]
    if derived:
        notes.append(f"{derived} relative_position_index buffers dropped (derived from the grid)")
    if target_state_dict is not None:
        target = {k: v for k, v in target_state_dict.items() if k.startswith(backbone_prefix)}
        err = fit_error(
            source, compare(out, target, allow_class_change=False), target, unknown=True, missing=True,
            hint="another backbone or size than the config's? (BEiT-Adapter: the detection variant has no "
            "cls_token, the segmentation variant needs with_cls_token=True and the checkpoint's img_size)",
            state_dict=out,
        )
        if err is not None:
            raise err
    report = {"num_converted": len(out), "by_part": {"backbone.bottom_up": len(out)}, "missing": [],
              "dropped": dropped, "notes": notes, "num_classes": None, "class_agnostic_box_reg": {}}
    return out, report


def _parse_lists(text: str, name: str) -> List[Tuple[float, ...]]:
    """All ``name=[a, b, ...]`` lists of an mmcv config text, in order of appearance."""
    pattern = re.compile(re.escape(name) + r"\s*=\s*[\[\(]([^\]\)]*)[\]\)]")
    return [tuple(float(x) for x in m.group(1).split(",") if x.strip()) for m in pattern.finditer(text)]


def check_conventions(report: Mapping[str, Any], meta: Mapping[str, Any], model: torch.nn.Module) -> List[str]:
    """Check that a converted official checkpoint means the same thing in `model`.

    Compares, where the checkpoint's ``meta["config"]`` (the mmdetection config
    text saved at training time) allows it, else against the release's values:

    * class count: ``fc_cls`` outputs - 1 == ``model.roi_heads.num_classes``;
    * box deltas: detectron2 ``Box2BoxTransform.weights`` == 1 / mmdet
      ``target_stds`` for the RPN and every (cascade) stage, within 2% (the
      release's third cascade stage uses 0.033 / 0.067 where detectron2 configs
      use 30 / 15: 1.0% / 0.5% apart) and ``target_means`` all 0;
    * pixels: the model normalises like ``img_norm_cfg`` (mean / std in the
      model's channel order; mmdet ``to_rgb=True`` means RGB).

    Returns notes (one line each); raises ``ValueError`` listing every
    violated convention.
    """
    notes, errors = [], []
    text = str(meta.get("config") or "")
    roi = getattr(model, "roi_heads", None)

    num_classes = report.get("num_classes")
    if roi is not None and num_classes is not None:
        if getattr(roi, "num_classes", num_classes) != num_classes:
            errors.append(
                f"the checkpoint classifies {num_classes} classes but the config has "
                f"roi_heads.num_classes={roi.num_classes}"
            )
        else:
            notes.append(f"classes: {num_classes} (+ background last) in both frameworks")

    predictors = []
    if roi is not None:
        bp = roi.box_predictor
        predictors = list(bp) if isinstance(bp, torch.nn.ModuleList) else [bp]
    stds = _parse_lists(text, "target_stds")
    means = _parse_lists(text, "target_means")
    if stds:
        rpn_stds, roi_stds = stds[0], stds[1:]
        source = "meta['config']"
    else:
        rpn_stds = (1.0, 1.0, 1.0, 1.0)
        roi_stds = list(CASCADE_STAGE_BOX_STDS[: max(1, len(predictors))])
        source = "the release's configs (checkpoint has no meta['config'])"
    if any(abs(v) > 1e-12 for m in means for v in m):
        errors.append(f"mmdet target_means {means} are not all 0; detectron2 has no delta means")

    def _compare(what, weights, std):
        weights = tuple(float(w) for w in weights)
        want = official_box_stds_to_weights(std)
        rel = max(abs(w - v) / v for w, v in zip(weights, want))
        if rel > 0.02:
            errors.append(
                f"{what}: detectron2 weights {tuple(weights)} but mmdet target_stds {std} "
                f"(= weights {tuple(round(v, 2) for v in want)})"
            )
        else:
            notes.append(
                f"{what}: weights {tuple(weights)} == 1 / target_stds {std}"
                + (f" (max relative difference {rel:.1%})" if rel > 1e-6 else "")
            )

    pg = getattr(model, "proposal_generator", None)
    if pg is not None and hasattr(pg, "box2box_transform"):
        _compare("RPN deltas", pg.box2box_transform.weights, rpn_stds)
    if predictors and len(roi_stds) != len(predictors):
        errors.append(f"{len(roi_stds)} box-head stage(s) in the checkpoint, {len(predictors)} in the model")
    else:
        for i, (pred, std) in enumerate(zip(predictors, roi_stds)):
            _compare(f"box stage {i} deltas", pred.box2box_transform.weights, std)
    notes.append(f"box-delta stds taken from {source}")

    norm = re.search(r"img_norm_cfg\s*=\s*dict\(([^)]*)\)", text)
    if norm and hasattr(model, "pixel_mean") and model.pixel_mean.is_meta:
        notes.append("pixel normalisation not checked (model on the meta device)")
    elif norm and hasattr(model, "pixel_mean"):
        mean = _parse_lists(norm.group(1), "mean")
        std = _parse_lists(norm.group(1), "std")
        rgb = "to_rgb=True" in norm.group(1).replace(" ", "")
        if mean and std:
            order = (lambda v: v) if (getattr(model, "input_format", "BGR") == "RGB") == rgb else (lambda v: v[::-1])
            m_mean = tuple(float(v) for v in model.pixel_mean.flatten())
            m_std = tuple(float(v) for v in model.pixel_std.flatten())
            if any(abs(a - b) > 1e-3 for a, b in zip(order(mean[0]), m_mean)) or any(
                abs(a - b) > 1e-3 for a, b in zip(order(std[0]), m_std)
            ):
                errors.append(
                    f"pixel normalisation differs: checkpoint trained with mean {mean[0]} std {std[0]} "
                    f"({'RGB' if rgb else 'BGR'}), model has mean {m_mean} std {m_std} "
                    f"({getattr(model, 'input_format', '?')})"
                )
            else:
                notes.append("pixel mean / std / channel order match the training config")
    if errors:
        raise ValueError(
            "the official checkpoint and the config disagree on conventions:\n  " + "\n  ".join(errors)
        )
    return notes


def match_class_order(
    state_dict: Dict[str, torch.Tensor], checkpoint_classes, target_classes
) -> Tuple[Dict[str, torch.Tensor], str]:
    """Permute the class-dependent rows of a converted state dict to `target_classes`' order.

    The classifier rows (background stays last), class-specific box deltas
    (4 rows per class) and mask logits (1 channel per class) of every stage are
    reordered so that row i means ``target_classes[i]``. Both class lists must
    hold the same names; otherwise ``ValueError`` names the differences.

    Returns (state_dict, note).
    """
    src, dst = list(checkpoint_classes), list(target_classes)
    if src == dst:
        return state_dict, "class order: checkpoint == dataset (no re-ordering)"
    if sorted(src) != sorted(dst) or len(set(src)) != len(src):
        only_ckpt = sorted(set(src) - set(dst))
        only_data = sorted(set(dst) - set(src))
        raise ValueError(
            f"class names differ: only in the checkpoint {only_ckpt[:10]}, only in the dataset "
            f"{only_data[:10]} (fine-tune instead of converting, or register the dataset with the "
            "checkpoint's classes)"
        )
    perm = torch.tensor([src.index(name) for name in dst])
    c = len(src)
    out = dict(state_dict)
    for key, value in state_dict.items():
        if re.search(r"cls_score\.(weight|bias)$", key) and value.shape[0] == c + 1:
            out[key] = torch.cat([value[perm], value[c:]])
        elif re.search(r"bbox_pred\.(weight|bias)$", key) and value.shape[0] == 4 * c:
            out[key] = value.reshape(c, 4, *value.shape[1:])[perm].reshape(value.shape)
        elif re.search(r"mask_head(\.\d+)?\.predictor\.(weight|bias)$", key) and value.shape[0] == c:
            out[key] = value[perm]
    return out, f"class order: re-ordered {c} classes from the checkpoint's order to the dataset's"


# --- semantic segmentation (the release's segmentation/, mmsegmentation 0.20.2) ---------------
#
# mmseg EncoderDecoder checkpoints: {"meta", "state_dict"} with
#
#   official (mmseg)          detectron2 (ours: SemanticSegmentor + vit_adapter.modeling.upernet)
#   backbone.<name>           backbone.<name>             (ViTAdapter, the detection names)
#   decode_head.<name>        sem_seg_head.decode_head.<name>      (UPerHead, same child names)
#   auxiliary_head.<name>     sem_seg_head.auxiliary_head.<name>   (FCNHead; dropped, and listed,
#                                                                   for a model without one)
#
# The release's pos_embed has a cls slot (1, 1 + N, D); it is dropped for a target without one.
SEGMENTOR_PREFIXES = {
    "backbone.": "backbone.",
    "decode_head.": "sem_seg_head.decode_head.",
    "auxiliary_head.": "sem_seg_head.auxiliary_head.",
}


def is_official_segmentor_state_dict(state_dict: Mapping[str, Any]) -> bool:
    """True for an mmseg EncoderDecoder state dict: ``backbone.*`` and ``decode_head.*`` keys."""
    keys = list(state_dict.keys())
    return any(k.startswith("backbone.") for k in keys) and any(k.startswith("decode_head.") for k in keys)


def convert_official_segmentor_state_dict(
    checkpoint: Mapping[str, Any],
    *,
    target_state_dict: Optional[Mapping[str, torch.Tensor]] = None,
    source: str = "(official)",
) -> Tuple[Dict[str, torch.Tensor], Dict[str, Any]]:
    """Rename a release UperNet checkpoint (mmseg layout) to our segmentor's names.

    Args:
        checkpoint: the loaded file (``{"meta", "state_dict"}``) or its state dict.
        target_state_dict: the receiving model's state dict; when given, the
            result must fill it exactly (:func:`vit_adapter.checkpoint.fit.fit_error`):
            no missing, no unexpected key, same shapes.

    Returns:
        (state_dict, report): ``num_converted``, ``by_part``, ``missing`` (empty),
        ``dropped`` (auxiliary-head keys for a target without that head),
        ``num_classes`` and ``notes``.

    Raises:
        ValueError: a key outside backbone / decode_head / auxiliary_head, or a
            mismatch with `target_state_dict`.
    """
    state_dict, meta = unwrap_official_checkpoint(checkpoint)
    out: Dict[str, torch.Tensor] = {}
    unplaced, dropped = [], []
    has_aux = target_state_dict is None or any(k.startswith("sem_seg_head.auxiliary_head.") for k in target_state_dict)
    derived = 0
    for key, value in state_dict.items():
        prefix = next((p for p in SEGMENTOR_PREFIXES if key.startswith(p)), None)
        if prefix is None:
            unplaced.append(key)
        elif prefix == "backbone." and _DERIVED_BUFFER.search(key):
            derived += 1  # BEiT's relative_position_index: derived from the grid, not stored
        elif prefix == "auxiliary_head." and not has_aux:
            dropped.append(key)
        else:
            out[SEGMENTOR_PREFIXES[prefix] + key[len(prefix):]] = value
    if unplaced:
        raise ValueError(
            f"{len(unplaced)} key(s) of the official checkpoint are not backbone / decode_head / "
            "auxiliary_head tensors (is this a UperNet ViT-Adapter checkpoint?):\n  " + "\n  ".join(sorted(unplaced))
        )
    report: Dict[str, Any] = {"notes": [], "missing": [], "dropped": sorted(dropped)}
    seg = out.get("sem_seg_head.decode_head.conv_seg.weight")
    report["num_classes"] = None if seg is None else int(seg.shape[0])
    if dropped:
        report["notes"].append(f"auxiliary head not converted ({len(dropped)} tensors): the model has none")
    if derived:
        report["notes"].append(f"{derived} relative_position_index buffers dropped (derived from the grid)")
    classes = meta.get("CLASSES")
    if classes and report["num_classes"] is not None and len(classes) != report["num_classes"]:
        report["notes"].append(f"meta CLASSES lists {len(classes)} classes, conv_seg has {report['num_classes']}")
    if target_state_dict is not None:
        pos_key = "backbone.pos_embed"
        if pos_key in out and pos_key in target_state_dict:
            have, want = out[pos_key], target_state_dict[pos_key]
            if have.shape[1] == want.shape[1] + 1 and have.shape[2] == want.shape[2]:
                out[pos_key] = have[:, 1:]  # target keeps no cls slot
        err = fit_error(
            source,
            compare(out, target_state_dict, allow_class_change=False),
            target_state_dict,
            unknown=True,
            missing=True,
            hint="another size or head than the config's? (e.g. a B checkpoint needs a B config)",
            state_dict=out,
        )
        if err is not None:
            raise err
    by_part: Dict[str, int] = {}
    for k in out:
        part = "backbone" if k.startswith("backbone.") else ".".join(k.split(".")[:2])
        by_part[part] = by_part.get(part, 0) + 1
    report["num_converted"] = len(out)
    report["by_part"] = by_part
    return out, report


def check_segmentor_conventions(report: Mapping[str, Any], meta: Mapping[str, Any], model: torch.nn.Module) -> List[str]:
    """Class count (``conv_seg`` outputs == the head's ``num_classes``) and pixel
    normalisation (as :func:`check_conventions`: the model has no box heads, so
    only its pixel check applies). Returns notes; ``ValueError`` on a mismatch."""
    head = getattr(model, "sem_seg_head", None)
    n = report.get("num_classes")
    notes = []
    if head is not None and n is not None and getattr(head, "num_classes", n) != n:
        raise ValueError(
            f"the official checkpoint and the config disagree on conventions:\n  the checkpoint "
            f"classifies {n} classes but the config has sem_seg_head.num_classes={head.num_classes}"
        )
    if n is not None:
        notes.append(f"classes: {n} (no background slot) in both frameworks")
    notes += [m for m in check_conventions({"num_classes": None}, meta, model) if not m.startswith("box-delta")]
    return notes


# ----------------------------------------------------------------------------- Mask2Former (segmentation/)
# The release's segmentation Mask2Former (mmseg EncoderDecoderMask2Former) saves
# backbone.* (BEiT-Adapter, our names) and decode_head.* (mmseg_custom Mask2FormerHead
# with mmcv / mmdet 2.22 modules). (regex on the official key, replacement under
# `sem_seg_head.`); see vit_adapter.modeling.mask2former for our names.
_PD = r"^decode_head\.pixel_decoder\."
_TD = r"^decode_head\.transformer_decoder\."
MASK2FORMER_TO_D2_RULES: Tuple[Tuple[str, str], ...] = (
    (_PD + r"input_convs\.(\d+)\.conv\.(weight|bias)$", r"pixel_decoder.input_convs.\1.\2"),
    (_PD + r"input_convs\.(\d+)\.gn\.(weight|bias)$", r"pixel_decoder.input_convs.\1.norm.\2"),
    (_PD + r"encoder\.layers\.(\d+)\.attentions\.0\.(sampling_offsets|attention_weights|value_proj|output_proj)"
     r"\.(weight|bias)$", r"pixel_decoder.encoder.layers.\1.self_attn.\2.\3"),
    (_PD + r"encoder\.layers\.(\d+)\.ffns\.0\.layers\.0\.0\.(weight|bias)$", r"pixel_decoder.encoder.layers.\1.ffn.fc1.\2"),
    (_PD + r"encoder\.layers\.(\d+)\.ffns\.0\.layers\.1\.(weight|bias)$", r"pixel_decoder.encoder.layers.\1.ffn.fc2.\2"),
    (_PD + r"encoder\.layers\.(\d+)\.norms\.([01])\.(weight|bias)$", r"pixel_decoder.encoder.layers.\1.norm{+1:2}.\3"),
    (_PD + r"level_encoding\.weight$", r"pixel_decoder.level_embed.weight"),
    (_PD + r"(lateral_convs|output_convs)\.(\d+)\.conv\.(weight|bias)$", r"pixel_decoder.\1.\2.\3"),
    (_PD + r"(lateral_convs|output_convs)\.(\d+)\.gn\.(weight|bias)$", r"pixel_decoder.\1.\2.norm.\3"),
    (_PD + r"mask_feature\.(weight|bias)$", r"pixel_decoder.mask_feature.\1"),
    (_TD + r"layers\.(\d+)\.attentions\.0\.attn\.(in_proj_weight|in_proj_bias|out_proj\.weight|out_proj\.bias)$",
     r"predictor.layers.\1.cross_attn.\2"),
    (_TD + r"layers\.(\d+)\.attentions\.1\.attn\.(in_proj_weight|in_proj_bias|out_proj\.weight|out_proj\.bias)$",
     r"predictor.layers.\1.self_attn.\2"),
    (_TD + r"layers\.(\d+)\.ffns\.0\.layers\.0\.0\.(weight|bias)$", r"predictor.layers.\1.ffn.fc1.\2"),
    (_TD + r"layers\.(\d+)\.ffns\.0\.layers\.1\.(weight|bias)$", r"predictor.layers.\1.ffn.fc2.\2"),
    (_TD + r"layers\.(\d+)\.norms\.([0-2])\.(weight|bias)$", r"predictor.layers.\1.norm{+1:2}.\3"),
    (_TD + r"post_norm\.(weight|bias)$", r"predictor.decoder_norm.\1"),
    (r"^decode_head\.(query_embed|query_feat|level_embed)\.weight$", r"predictor.\1.weight"),
    (r"^decode_head\.cls_embed\.(weight|bias)$", r"predictor.class_embed.\1"),
    (r"^decode_head\.mask_embed\.([024])\.(weight|bias)$", r"predictor.mask_embed.\1.\2"),
    (r"^decode_head\.decoder_input_projs\.(\d+)\.(weight|bias)$", r"predictor.input_projs.\1.\2"),
)
_COMPILED_MASK2FORMER_RULES = [(re.compile(p), r) for p, r in MASK2FORMER_TO_D2_RULES]
# Buffers the release stores and we derive (not parameters).
_MASK2FORMER_DROP = re.compile(r"^backbone\.(blocks\.\d+\.attn\.relative_position_index|rel_pos_bias\.relative_position_index)$")


def is_official_mask2former_state_dict(state_dict: Mapping[str, Any]) -> bool:
    """True for the release's segmentation Mask2Former: ``backbone.*`` plus
    ``decode_head.pixel_decoder.*`` and ``decode_head.transformer_decoder.*``."""
    keys = list(state_dict)
    return (any(k.startswith("backbone.") for k in keys)
            and any(k.startswith("decode_head.pixel_decoder.") for k in keys)
            and any(k.startswith("decode_head.transformer_decoder.") for k in keys))


def _rename_by(rules, key: str) -> Optional[str]:
    for pattern, repl in rules:
        m = pattern.match(key)
        if m is None:
            continue

        def _offset(om, m=m):
            return str(int(m.group(int(om.group(2)))) + int(om.group(1)))

        return m.expand(_OFFSET_GROUP.sub(_offset, repl))
    return None


def convert_official_mask2former_state_dict(
    checkpoint: Mapping[str, Any],
    *,
    backbone_prefix: str = "backbone.",
    head_prefix: str = "sem_seg_head.",
    target_state_dict: Optional[Mapping[str, torch.Tensor]] = None,
    source: str = "(official)",
) -> Tuple[Dict[str, torch.Tensor], Dict[str, Any]]:
    """Rename a release segmentation Mask2Former checkpoint to our names.

    ``backbone.*`` keeps its names (BEiT-Adapter / ViT-Adapter use the
    release's) under `backbone_prefix`, its stored ``relative_position_index``
    buffers dropped (derived here); ``decode_head.*`` follows
    :data:`MASK2FORMER_TO_D2_RULES` under `head_prefix`. Class rows stay in
    the checkpoint's order (``cls_embed``: the dataset's classes, no-object
    last, as ours).

    Returns:
        (state_dict, report) as :func:`convert_official_state_dict`.

    Raises:
        ValueError: a key no rule places, or (with `target_state_dict`) a
            missing / unexpected / mis-shaped key (:class:`CheckpointMismatchError`).
    """
    state_dict, meta = unwrap_official_checkpoint(checkpoint)
    out: Dict[str, torch.Tensor] = {}
    unplaced, dropped = [], []
    for key, value in state_dict.items():
        if _MASK2FORMER_DROP.match(key):
            dropped.append(key)
            continue
        if key.startswith("backbone."):
            new_key = backbone_prefix + key[len("backbone."):]
        else:
            renamed = _rename_by(_COMPILED_MASK2FORMER_RULES, key)
            new_key = None if renamed is None else head_prefix + renamed
        if new_key is None:
            unplaced.append(key)
            continue
        out[new_key] = value
    if unplaced:
        raise ValueError(
            f"{len(unplaced)} key(s) of the official checkpoint have no counterpart in our Mask2Former "
            "(is this a release segmentation Mask2Former checkpoint?):\n  " + "\n  ".join(sorted(unplaced)))
    if target_state_dict is not None:
        err = fit_error(source, compare(out, target_state_dict, allow_class_change=False), target_state_dict,
                        unknown=True, missing=True,
                        hint="another size, class count or query count than the config's?", state_dict=out)
        if err is not None:
            raise err
    num_classes = None
    cls_key = head_prefix + "predictor.class_embed.weight"
    if cls_key in out:
        num_classes = out[cls_key].shape[0] - 1
    notes = [f"{len(dropped)} stored relative_position_index buffers dropped (derived by the model)"] if dropped else []
    if meta.get("CLASSES"):
        notes.append(f"class rows kept in the checkpoint's order ({len(meta['CLASSES'])} classes, no-object last)")
    by_part: Dict[str, int] = {}
    for k in out:
        part = "backbone" if k.startswith(backbone_prefix) else ".".join(k.split(".")[:2])
        by_part[part] = by_part.get(part, 0) + 1
    report = {"notes": notes, "missing": [], "dropped": [], "num_classes": num_classes,
              "num_converted": len(out), "by_part": by_part}
    return out, report
