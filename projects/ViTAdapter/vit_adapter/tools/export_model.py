"""Export a trained ViT-Adapter detector to ONNX (detectron2's tools/deploy/export_model.py conventions).

    python tools/export_model.py --config-file configs/demo/mask_rcnn_vit_adapter_demo.py \
        --format onnx --output exported/ [--sample-image img.jpg] \
        train.init_checkpoint=output/demo/model_final.pth [key=value ...]

Writes `<output>/model.onnx`: the whole R-CNN (backbone, RPN with NMS,
RoIAlign, box and mask heads) with dynamic input height / width (multiples of
32), run by `vit_adapter.deploy.OnnxPredictor` (numpy + onnxruntime only).
Weights come from `train.init_checkpoint` through the project's checkpointer
(files, URLs, vit_adapter://<model-zoo name>, official checkpoints).

The graph is traced on a synthetic input whose shape takes every
shape-dependent branch the general way (`--trace-size`; default
`vit_adapter.deploy.export.trace_size`: not square, not the ViT's pretraining
grid, window padding exercised). With `--sample-image`, the exported model is
then checked against PyTorch on that image and on a crop of it whose network
input has another shape, and the agreement of the top-50 detections is
printed for each.

Unsupported formats, a trace size that is not a multiple of 32, a missing
config / checkpoint / image or missing onnx / onnxruntime (the `deploy`
extra) stop with a one-line error.
"""
import argparse
import json
import logging
import os
import sys

import numpy as np

from vit_adapter.deploy.predictor import DeployError, OnnxPredictor, preprocess, require

logger = logging.getLogger("vit_adapter.export_model")


def get_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config-file", required=True, metavar="FILE")
    p.add_argument("--format", default="onnx", help="export format (supported: onnx)")
    p.add_argument("--output", required=True, help="folder for model.onnx")
    p.add_argument("--sample-image", default=None, help="image to check the exported model on against PyTorch")
    p.add_argument("--trace-size", default=None,
                   help="H,W of the synthetic input traced (multiples of 32; default: see export.trace_size)")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides key=value")
    return p


def _trace_size(text):
    try:
        h, w = (int(v) for v in text.split(","))
    except ValueError:
        raise DeployError(f"--trace-size must be H,W (two integers), got {text!r}") from None
    return h, w


def _read_rgb(path):
    """The sample image, decoded as in training and evaluation (vit_adapter.data.image_io)."""
    from vit_adapter.data.image_io import read_image_or_raise

    return read_image_or_raise(path, "RGB", DeployError)


def main(argv=None):
    """Export; returns the path of model.onnx and, with a sample image, the
    agreement (:func:`vit_adapter.deploy.agreement.agreement`) per network input shape."""
    from vit_adapter.deploy.export import SUPPORTED_FORMATS, check_size

    args = get_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.format not in SUPPORTED_FORMATS:
        raise DeployError(f"unsupported --format {args.format!r} (supported: {', '.join(SUPPORTED_FORMATS)})")
    require("onnx"), require("onnxruntime")
    if not os.path.isfile(args.config_file):
        raise DeployError(f"config file not found: {args.config_file}")
    if args.trace_size is not None:
        check_size(*_trace_size(args.trace_size))
    image = _read_rgb(args.sample_image) if args.sample_image else None

    import torch
    from detectron2.config import LazyConfig, instantiate

    from vit_adapter.checkpoint.checkpointer import load_for_inference
    from vit_adapter.engine.overrides import apply_overrides
    from vit_adapter.deploy.agreement import agreement
    from vit_adapter.deploy.export import export_detector, preprocess_metadata, pytorch_detections, trace_size
    from vit_adapter.deploy.export import export_segmentor, is_segmentor, pytorch_label_map, segmentor_metadata

    cfg = apply_overrides(LazyConfig.load(args.config_file), args.opts)
    weights = cfg.train.get("init_checkpoint", "") if "train" in cfg else ""
    if not weights:
        raise DeployError("no weights to export: set train.init_checkpoint=<checkpoint> on the command line")
    model = instantiate(cfg.model).eval()
    load_for_inference(model, weights)  # safe loading; refuses a model left partly unloaded

    size = _trace_size(args.trace_size) if args.trace_size else trace_size(model)
    sample = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(0))
    os.makedirs(args.output, exist_ok=True)
    if is_segmentor(model):  # the network only; slide windows and resizing in numpy (OnnxPredictor)
        path = export_segmentor(cfg, model, os.path.join(args.output, "model.onnx"), sample)
    else:
        path = export_detector(cfg, model, os.path.join(args.output, "model.onnx"), sample)
    logger.info(f"wrote {path} ({os.path.getsize(path) / 2**20:.1f} MiB)")
    reports = None
    if image is not None and is_segmentor(model):
        predictor, meta = OnnxPredictor(path), segmentor_metadata(cfg, model)
        reports = {}
        for check in _check_images(image, meta):
            shape = "x".join(str(v) for v in preprocess(check, meta)[0].shape[2:])
            same = pytorch_label_map(model, cfg, check)["sem_seg"] == predictor(check)["sem_seg"]
            reports[shape] = {"pixels": int(same.size), "label_agreement": float(same.mean())}
            logger.info(f"network input {shape}: ONNX label map == PyTorch's on {same.mean():.6f} of the pixels")
    elif image is not None:
        predictor, meta = OnnxPredictor(path), preprocess_metadata(cfg, model)
        reports = {}
        for check in _check_images(image, meta):
            shape = "x".join(str(v) for v in preprocess(check, meta)[0].shape[2:])
            reports[shape] = agreement(pytorch_detections(model, cfg, check), predictor(check))
            logger.info(f"network input {shape}: top-{reports[shape]['checked']} PyTorch detections "
                        f"matched by ONNX: {json.dumps(reports[shape])}")
    return path, reports


def _check_images(image, meta):
    """The sample image and a crop of it whose network input has another shape
    (agreement is checked at two shapes)."""
    traced = preprocess(image, meta)[0].shape
    h, w = image.shape[:2]
    for crop in (image[:, : max(w * 2 // 3, 1)], image[: max(h * 2 // 3, 1)], image.transpose(1, 0, 2)):
        if preprocess(np.ascontiguousarray(crop), meta)[0].shape != traced:
            return [image, np.ascontiguousarray(crop)]
    return [image]


if __name__ == "__main__":
    from vit_adapter.checkpoint.checkpointer import CheckpointError
    from vit_adapter.engine.overrides import OverrideError

    try:
        main()
    except (DeployError, CheckpointError, OverrideError, ImportError) as e:
        sys.exit(f"export_model.py: error: {e}")
