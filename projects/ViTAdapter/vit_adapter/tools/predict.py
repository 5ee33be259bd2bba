#!/usr/bin/env python
"""Run a trained detector (LazyConfig + checkpoint) on images and save visualisations.

    python tools/predict.py --config-file configs/demo/mask_rcnn_vit_adapter_demo.py \
        --weights output/demo/model_final.pth --input img1.jpg img2.png some_folder/ \
        --output predictions/ [--score-threshold 0.5] [--device cpu] [key=value ...]

With `--onnx exported/model.onnx` instead of `--weights`, the exported model
(tools/export_model.py) runs with onnxruntime and the same pictures are drawn.

Each input image gives `<output>/<image name>.png`: the image with the
predicted boxes, classes, scores and masks drawn by detectron2's
`Visualizer`. Class names come from the metadata of the config's test
dataset (`dataloader.test.dataset.names`) when it is registered (the demo
dataset always is), else class ids are shown. The image is resized by the
config's test augmentations, as in evaluation; predictions are drawn at the
original resolution.

A missing file, a corrupt image, a folder without images or a missing
config / checkpoint stops with a one-line error naming it.
"""
import argparse
import logging
import os
import sys

import numpy as np
import torch
from PIL import Image

from detectron2.config import LazyConfig, instantiate
from detectron2.data import MetadataCatalog
from detectron2.data import transforms as T
from detectron2.utils.visualizer import ColorMode, Visualizer

from vit_adapter.checkpoint.checkpointer import CheckpointError, load_for_inference
from vit_adapter.data.image_io import read_image_or_raise
from vit_adapter.engine.overrides import OverrideError, apply_overrides

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
logger = logging.getLogger("vit_adapter.predict")


class PredictError(ValueError):
    """Bad input to the predictor (missing / unreadable file)."""


def list_images(inputs):
    """Expand files and folders into a sorted list of image paths."""
    paths = []
    for item in inputs:
        if os.path.isdir(item):
            found = sorted(
                os.path.join(item, f) for f in os.listdir(item) if f.lower().endswith(IMAGE_EXTENSIONS)
            )
            if not found:
                raise PredictError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) in folder: {item}")
            paths += found
        elif os.path.isfile(item):
            paths.append(item)
        elif "=" in item:  # `--input a.jpg key=value --output x`: nargs="+" took the override
            raise PredictError(
                f"{item!r} is not an image file but looks like a config override: put the key=value "
                "overrides last, after all options"
            )
        else:
            raise PredictError(f"image file not found: {item}")
    if not paths:
        raise PredictError("no input images given")
    return paths


def read_image(path, fmt):
    """(H, W, 3) uint8 array in `fmt` ("RGB" / "BGR"), decoded as in training and
    evaluation (`vit_adapter.data.image_io.read_image`: EXIF orientation, 16-bit
    scaling, pixel limit); PredictError if unreadable."""
    return read_image_or_raise(path, fmt, PredictError)


class Predictor:
    """A LazyConfig detector in eval mode with the config's test-time resize.

    Args:
        cfg: the loaded LazyConfig (needs `model` and `dataloader.test.mapper`).
        weights (str): checkpoint path, URL or vit_adapter://<model-zoo name> (ViTAdapterCheckpointer).
        device (str or None): "cpu" / "cuda"; default cfg.train.device if
            available, else cpu.
    """

    def __init__(self, cfg, weights, device=None):
        if device is None:
            device = cfg.train.get("device", "cpu") if "train" in cfg else "cpu"
            if device.startswith("cuda") and not torch.cuda.is_available():
                device = "cpu"
        self.model = instantiate(cfg.model).to(device).eval()
        load_for_inference(self.model, weights)  # safe loading; refuses a model left partly unloaded
        self.input_format = cfg.model.get("input_format", "BGR")
        self.aug = T.AugmentationList(
            [instantiate(a) for a in cfg.dataloader.test.mapper.get("augmentations", [])]
        )
        self.device = device

    @torch.no_grad()
    def __call__(self, image):
        """image: (H, W, 3) uint8 in the model's input format -> detectron2 "instances" (CPU);
        for a semantic-segmentation model, the (H, W) int64 label map (argmax of "sem_seg")."""
        height, width = image.shape[:2]
        aug_input = T.AugInput(image)
        self.aug(aug_input)
        tensor = torch.as_tensor(np.ascontiguousarray(aug_input.image.transpose(2, 0, 1)))
        out = self.model([{"image": tensor.to(self.device), "height": height, "width": width}])[0]
        if "instances" not in out and "sem_seg" in out:
            return out["sem_seg"].argmax(dim=0).to("cpu")
        return out["instances"].to("cpu")


class OnnxModelPredictor:
    """:class:`vit_adapter.deploy.OnnxPredictor` (an exported ``model.onnx``)
    behind :class:`Predictor`'s interface: RGB image -> detectron2 "instances"."""

    input_format = "RGB"

    def __init__(self, path):
        from vit_adapter.deploy import OnnxPredictor

        self.predictor = OnnxPredictor(path)

    def __call__(self, image):
        from detectron2.structures import Boxes, Instances

        out = self.predictor(image)
        fields = {"pred_boxes": Boxes(torch.from_numpy(out["boxes"])), "scores": torch.from_numpy(out["scores"]),
                  "pred_classes": torch.from_numpy(out["classes"])}
        if "masks" in out:
            fields["pred_masks"] = torch.from_numpy(out["masks"])
        return Instances(image.shape[:2], **fields)


def draw(image_rgb, instances, metadata, score_threshold):
    """RGB uint8 array with the predictions above `score_threshold` drawn (a (H, W)
    label map: every class's region in colour, named by the metadata's stuff_classes)."""
    if isinstance(instances, torch.Tensor):
        vis = Visualizer(image_rgb, metadata=metadata, instance_mode=ColorMode.IMAGE)
        return vis.draw_sem_seg(instances, alpha=0.5).get_image()
    instances = instances[instances.scores >= score_threshold]
    vis = Visualizer(image_rgb, metadata=metadata, instance_mode=ColorMode.IMAGE)
    return vis.draw_instance_predictions(instances).get_image()


def test_metadata(cfg):
    """Metadata of the config's first test dataset (class names), or an empty one."""
    try:
        names = cfg.dataloader.test.dataset.names
    except Exception:
        return MetadataCatalog.get("__unused")
    name = names if isinstance(names, str) else names[0]
    return MetadataCatalog.get(name)


def predict_images(predictor, paths, output_dir, metadata, score_threshold=0.5):
    """Run on `paths`, write `<output_dir>/<name>.png` for each; returns the PNG paths."""
    os.makedirs(output_dir, exist_ok=True)
    written = []
    for path in paths:
        image = read_image(path, predictor.input_format)
        instances = predictor(image)
        rgb = image[:, :, ::-1] if predictor.input_format == "BGR" else image
        out_path = os.path.join(output_dir, os.path.splitext(os.path.basename(path))[0] + ".png")
        Image.fromarray(draw(rgb, instances, metadata, score_threshold)).save(out_path)
        what = "label map" if isinstance(instances, torch.Tensor) else f"{len(instances)} detections"
        logger.info(f"{path}: {what} -> {out_path}")
        written.append(out_path)
    return written


def get_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config-file", required=True, metavar="FILE")
    p.add_argument("--weights", help="checkpoint (.pth) to load")
    p.add_argument("--onnx", metavar="FILE", help="run an exported model.onnx (tools/export_model.py) instead")
    p.add_argument("--input", required=True, nargs="+", help="image files and/or folders")
    p.add_argument("--output", default="predictions", help="folder for the PNG files")
    p.add_argument("--score-threshold", type=float, default=0.5)
    p.add_argument("--device", default=None, help="cpu or cuda (default: the config's, if available)")
    p.add_argument(
        "opts", nargs=argparse.REMAINDER,
        help="config overrides key=value (strict: unknown keys are errors; +key=value adds a key)",
    )
    return p


def main(argv=None):
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not os.path.isfile(args.config_file):
        raise PredictError(f"config file not found: {args.config_file}")
    if (args.weights is None) == (args.onnx is None):
        raise PredictError("give exactly one of --weights (PyTorch checkpoint) and --onnx (exported model.onnx)")
    if args.onnx is not None and not os.path.isfile(args.onnx):
        raise PredictError(f"ONNX model not found: {args.onnx}")
    if args.weights is not None and "://" not in args.weights and not os.path.isfile(args.weights):
        raise PredictError(f"checkpoint file not found: {args.weights}")
    paths = list_images(args.input)
    # Loading the config registers its datasets (class names for drawing).
    cfg = apply_overrides(LazyConfig.load(args.config_file), args.opts)
    if args.onnx is not None:
        from vit_adapter.deploy import DeployError

        try:
            predictor = OnnxModelPredictor(args.onnx)
        except (ImportError, DeployError) as e:  # onnxruntime missing (names the deploy extra), bad file
            raise PredictError(str(e)) from None
    else:
        predictor = Predictor(cfg, args.weights, device=args.device)
    return predict_images(predictor, paths, args.output, test_metadata(cfg), args.score_threshold)


if __name__ == "__main__":
    try:
        main()
    except (PredictError, CheckpointError, OverrideError) as e:
        sys.exit(f"predict.py: error: {e}")
