#!/usr/bin/env python
"""Convert an official ViT-Adapter (mmdetection 2.x / mmsegmentation 0.20) checkpoint to detectron2.

    python tools/convert_official_checkpoint.py \\
        mask_rcnn_deit_adapter_tiny_fpn_3x_coco.pth.tar output/mask_rcnn_vit_adapter_t_3x_ms.pth \\
        --config configs/COCO/mask_rcnn_vit_adapter_t_3x_ms.py

SRC: a file, URL or model-zoo name (``vit_adapter://<name>``) holding
``{"meta", "state_dict"}`` with ``backbone.*``, ``neck.*``, ``rpn_head.*``,
``roi_head.*`` (Mask R-CNN or Cascade Mask R-CNN), or the segmentation release's
``backbone.*``, ``decode_head.*``, ``auxiliary_head.*`` (UperNet; --config
configs/ADE20K/...) or ``backbone.*``, ``decode_head.pixel_decoder.*``,
``decode_head.transformer_decoder.*`` (Mask2Former; --config
configs/ADE20K/mask2former_*.py, ...). DST: ``.pth`` (``{"model":
...}``, loadable by any detectron2 checkpointer) or ``.safetensors``.

Every tensor is renamed (vit_adapter.checkpoint.official); a key without a
detectron2 counterpart stops the conversion. With ``--config`` the converted
dict must fill the config's model exactly (no missing, no unexpected key, same
shapes), and the class count, box-delta weights and pixel normalisation are
checked against the checkpoint's own training config (``meta["config"]``).
The checkpoint is read with ``torch.load(weights_only=True)``; files that need
other pickled objects are refused unless ``--allow-unsafe-pickle``.
"""
import argparse
import os
import sys


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("src", help="official checkpoint: path, URL or vit_adapter://<name>")
    p.add_argument("dst", help="output .pth or .safetensors")
    p.add_argument("--config", help="LazyConfig of the detectron2 model the weights are for")
    p.add_argument(
        "--cascade-mask-stage",
        type=int,
        default=None,
        help="Cascade only: keep only this stage's official mask head, as detectron2's single cascade mask "
        "head (default: all stages for a model with per-stage heads, else the last stage)",
    )
    p.add_argument(
        "--dataset",
        help="registered dataset whose thing_classes order the class rows must follow "
        "(default: the config's dataloader.test dataset, when it has one)",
    )
    p.add_argument(
        "--backbone-only",
        action="store_true",
        help="convert only backbone.* (release HTC++ / Mask2Former detectors, UperNet / Mask2Former "
        "segmentors: heads detectron2 does not express); with --config, the backbone must be filled exactly",
    )
    p.add_argument("--allow-unsafe-pickle", action="store_true", help="trusted files only")
    p.add_argument("opts", nargs="*", help="config overrides key=value (with --config)")
    return p.parse_intermixed_args(argv)


def build_model(config_file, opts):
    """(model, name of the config's test dataset or None)."""
    from detectron2.config import LazyConfig, instantiate

    if not os.path.isfile(config_file):
        raise FileNotFoundError(f"config file not found: {config_file}")
    from vit_adapter.engine.overrides import apply_overrides

    cfg = apply_overrides(LazyConfig.load(config_file), opts or [])  # strict: OverrideError (a ValueError)
    model = instantiate(cfg.model)
    model.eval()
    names = None
    try:
        names = cfg.dataloader.test.dataset.names
    except (AttributeError, KeyError):
        pass
    if names is not None and not isinstance(names, str):
        names = list(names)[0] if len(names) else None
    return model, names


def dataset_classes(name):
    """thing_classes of a registered dataset (demo dataset registered on demand), or None."""
    from detectron2.data import DatasetCatalog, MetadataCatalog

    if name is None:
        return None
    if name.startswith("vit_adapter_demo") and name not in DatasetCatalog.list():  # configs register it
        from vit_adapter.data import register_demo_dataset

        register_demo_dataset()
    return MetadataCatalog.get(name).get("thing_classes")


def convert(src, dst, *, config=None, opts=None, cascade_mask_stage=None, allow_unsafe_pickle=False, dataset=None,
            backbone_only=False):
    """Convert `src` to `dst`; returns the report dict (see convert_official_state_dict)."""
    from vit_adapter.checkpoint import model_zoo
    from vit_adapter.checkpoint.checkpointer import check_weights, find_vit, load_checkpoint_file
    from vit_adapter.checkpoint.official import (
        is_official_segmentor_state_dict,
        cascade_mask_stage_for,
        check_conventions,
        convert_official_backbone,
        convert_official_mask2former_state_dict,
        convert_official_state_dict,
        is_official_mask2former_state_dict,
        is_official_state_dict,
        match_class_order,
        unwrap_official_checkpoint,
    )

    local = model_zoo.get_local_path(src)
    raw = load_checkpoint_file(local, allow_unsafe_pickle=allow_unsafe_pickle)
    state_dict, meta = unwrap_official_checkpoint(raw) if isinstance(raw, dict) else ({}, {})
    if not backbone_only and is_official_mask2former_state_dict(state_dict):  # segmentation/ Mask2Former
        check_weights(state_dict, src, "'state_dict'")
        model = build_model(config, opts)[0] if config else None
        out, report = convert_official_mask2former_state_dict(
            {"state_dict": state_dict, "meta": meta},
            target_state_dict=None if model is None else model.state_dict(), source=src)
        _save(out, src, dst)
        return report
    if not backbone_only and is_official_segmentor_state_dict(state_dict):  # segmentation/ (mmseg UperNet)
        check_weights(state_dict, src, "'state_dict'")
        return _convert_segmentor(src, dst, state_dict, meta, config, opts)
    if not backbone_only and not is_official_state_dict(state_dict):
        raise ValueError(
            f"{src} is not an official mmdetection detector checkpoint (needs backbone.* and "
            "neck.* / rpn_head.* / roi_head.* keys; for the backbone of a release HTC++ / segmentation "
            "checkpoint use --backbone-only)"
        )
    check_weights(state_dict, src, "'state_dict'")
    model, test_dataset = build_model(config, opts) if config else (None, None)
    prefix, target = "backbone.bottom_up.", None
    if model is not None:
        vit_prefix, vit = find_vit(model)
        if vit is None:
            raise ValueError(f"the model of {config} has no ViT backbone")
        prefix, target = vit_prefix, model.state_dict()
        if cascade_mask_stage is None:
            cascade_mask_stage = cascade_mask_stage_for(target)
    if backbone_only:
        out, report = convert_official_backbone(
            {"state_dict": state_dict}, backbone_prefix=prefix, target_state_dict=target, source=src
        )
        _save(out, src, dst)
        return report
    out, report = convert_official_state_dict(
        {"state_dict": state_dict, "meta": meta},
        backbone_prefix=prefix,
        target_state_dict=target,
        cascade_mask_stage=cascade_mask_stage,
        source=src,
    )
    if model is not None:  # (the converted weights fill the model exactly: checked above)
        if getattr(model, "input_format", "RGB") == "BGR":
            for key in (prefix + "patch_embed.proj.weight", prefix + "spm.stem.0.weight"):
                out[key] = out[key].flip(1)
            report["notes"].append("first convs flipped RGB -> BGR for model.input_format='BGR'")
        report["notes"] += check_conventions(report, meta, model)
        classes = dataset_classes(dataset or test_dataset)
        if classes and meta.get("CLASSES"):
            out, note = match_class_order(out, meta["CLASSES"], classes)
            report["notes"].append(f"{note} ({dataset or test_dataset})")
        elif meta.get("CLASSES"):
            report["notes"].append("class order kept (no dataset to compare with: pass --dataset)")

    _save(out, src, dst)
    return report


def _save(out, src, dst):
    from vit_adapter.checkpoint.checkpointer import atomic_torch_save

    os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
    if dst.endswith(".safetensors"):
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in out.items()}, dst, metadata={"source": os.path.basename(src)})
    else:
        atomic_torch_save({"model": out, "__author__": f"czczup/ViT-Adapter ({os.path.basename(src)})"}, dst)


def _convert_segmentor(src, dst, state_dict, meta, config, opts):
    """A release UperNet checkpoint (mmseg: backbone / decode_head / auxiliary_head) -> our segmentor."""
    from vit_adapter.checkpoint.official import check_segmentor_conventions, convert_official_segmentor_state_dict

    model = build_model(config, opts)[0] if config else None
    out, report = convert_official_segmentor_state_dict(
        {"state_dict": state_dict, "meta": meta},
        target_state_dict=None if model is None else model.state_dict(),
        source=src,
    )
    if model is not None:
        if getattr(model, "input_format", "RGB") == "BGR":
            for key in ("backbone.patch_embed.proj.weight", "backbone.spm.stem.0.weight"):
                out[key] = out[key].flip(1)
            report["notes"].append("first convs flipped RGB -> BGR for model.input_format='BGR'")
        report["notes"] += check_segmentor_conventions(report, meta, model)
    _save(out, src, dst)
    return report


def main(argv=None):
    args = parse_args(argv)
    try:
        report = convert(
            args.src,
            args.dst,
            config=args.config,
            opts=args.opts,
            cascade_mask_stage=args.cascade_mask_stage,
            allow_unsafe_pickle=args.allow_unsafe_pickle,
            dataset=args.dataset,
            backbone_only=args.backbone_only,
        )
    except (ValueError, FileNotFoundError, RuntimeError, KeyError) as e:
        sys.exit(f"convert_official_checkpoint.py: error: {e}")
    parts = ", ".join(f"{k}: {v}" for k, v in sorted(report["by_part"].items()))
    print(f"converted {report['num_converted']} tensors ({parts}) -> {args.dst}")
    for note in report["notes"]:
        print(f"  {note}")
    if report["dropped"] and not args.backbone_only:  # (backbone only: counted per part in the notes)
        print(f"  not converted ({len(report['dropped'])}): " + ", ".join(report["dropped"]))
    if not args.config:
        print("  (no --config: names only, not checked against a model)")


if __name__ == "__main__":
    main()
