"""Run an exported ViT-Adapter detector or segmentor (``model.onnx`` from
tools/export_model.py) with numpy and onnxruntime only.

This module imports neither torch nor detectron2 (nor anything else from
``vit_adapter``), so it can be shipped next to ``model.onnx`` on its own. The
exported graph takes the normalised, padded image and ends with the
detector's per-detection outputs at the resized resolution; this module does
what detectron2 does around the network:

* preprocessing (``DatasetMapper`` + ``GeneralizedRCNN.preprocess_image``):
  ``ResizeShortestEdge`` from the config's test augmentation (PIL bilinear,
  as detectron2's ``ResizeTransform`` on uint8 images), channel order,
  ``(x - pixel_mean) / pixel_std``, zero padding to a multiple of 32;
* postprocessing (``detector_postprocess``): boxes scaled to the input
  image and clipped, empty boxes dropped, 28x28 mask probabilities pasted
  into the image (bilinear, ``grid_sample(align_corners=False)``'s
  convention) and thresholded.

The preprocessing settings are read from the ONNX model's metadata (key
``vit_adapter``, written by :func:`vit_adapter.deploy.export.export_detector`).
"""
import json
import math
import os
from typing import Dict, Tuple

import numpy as np

__all__ = ["DeployError", "METADATA_KEY", "OnnxPredictor", "require", "resized_shape", "preprocess", "paste_masks",
           "slide_windows", "resize_scores"]

METADATA_KEY = "vit_adapter"
#: Graph input / output names (shared with the exporter).
INPUT_NAMES = ("image", "image_size")
OUTPUT_NAMES = ("boxes", "scores", "classes", "mask_probs")
DEPLOY_EXTRA = "pip install -e '.[deploy]' (or pip install onnx onnxruntime)"


class DeployError(ValueError):
    """Bad input to the exporter or the ONNX predictor."""


def require(module: str):
    """Import `module` (``"onnx"`` / ``"onnxruntime"``) or raise an ImportError
    naming the ``deploy`` extra that provides it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ImportError(
            f"{module} is not installed; ONNX export and inference need the deploy extra: {DEPLOY_EXTRA}"
        ) from None


def resized_shape(h: int, w: int, short_edge: int, max_size: int) -> Tuple[int, int]:
    """(new_h, new_w) of ``ResizeShortestEdge`` for one short-edge length
    (detectron2's rule: scale the short side to `short_edge`, then shrink so
    the long side is at most `max_size`, round half up)."""
    scale = short_edge / min(h, w)
    newh, neww = (short_edge, scale * w) if h < w else (scale * h, short_edge)
    if max(newh, neww) > max_size:
        shrink = max_size / max(newh, neww)
        newh, neww = newh * shrink, neww * shrink
    return int(newh + 0.5), int(neww + 0.5)


def _interp_matrix(starts: np.ndarray, ends: np.ndarray, n_out: int, n_in: int, origin: int) -> np.ndarray:
    """(N, n_out, n_in) bilinear weights sampling a length-`n_in` mask axis
    stretched over [start, end) at the pixel centres origin + 0.5 ... of
    `n_out` pixels, zero outside the mask (``grid_sample``, ``align_corners=False``,
    zero padding)."""
    centres = np.arange(origin, origin + n_out, dtype=np.float32) + 0.5
    g = (centres[None, :] - starts[:, None]) / (ends - starts)[:, None] * 2 - 1  # [-1, 1] over the box
    pos = ((g + 1) * n_in - 1) / 2  # mask pixel coordinate
    lo = np.floor(pos)
    frac = (pos - lo).astype(np.float32)
    lo = lo.astype(np.int64)
    out = np.zeros(g.shape + (n_in,), dtype=np.float32)
    rows = np.arange(g.shape[0])[:, None]
    cols = np.arange(n_out)[None, :]
    for idx, wgt in ((lo, 1 - frac), (lo + 1, frac)):
        ok = (idx >= 0) & (idx < n_in)
        out[np.broadcast_to(rows, idx.shape)[ok], np.broadcast_to(cols, idx.shape)[ok], idx[ok]] += wgt[ok]
    return out


def paste_masks(mask_probs: np.ndarray, boxes: np.ndarray, height: int, width: int,
                threshold: float = 0.5) -> np.ndarray:
    """(N, M, M) mask probabilities in their boxes -> (N, height, width) bool
    image masks: detectron2's ``paste_masks_in_image`` (bilinear resampling of
    each mask over its box, then ``>= threshold``). Bilinear sampling is
    separable, so each mask is ``Ry @ mask @ Rx.T`` over the box's pixels."""
    n, mh, mw = mask_probs.shape
    out = np.zeros((n, height, width), dtype=bool)
    for i in range(n):
        x0, y0, x1, y1 = (float(v) for v in boxes[i])
        # Pixels whose centre can get weight lie within one pixel of the box.
        c0, r0 = max(int(math.floor(x0)) - 1, 0), max(int(math.floor(y0)) - 1, 0)
        c1, r1 = min(int(math.ceil(x1)) + 1, width), min(int(math.ceil(y1)) + 1, height)
        if c1 <= c0 or r1 <= r0:
            continue
        ry = _interp_matrix(np.float32([y0]), np.float32([y1]), r1 - r0, mh, r0)[0]
        rx = _interp_matrix(np.float32([x0]), np.float32([x1]), c1 - c0, mw, c0)[0]
        out[i, r0:r1, c0:c1] = ry @ mask_probs[i].astype(np.float32) @ rx.T >= threshold
    return out


def preprocess(image: np.ndarray, meta: Dict) -> Tuple[np.ndarray, Tuple[int, int]]:
    """(H, W, 3) uint8 RGB image -> the network input (1, 3, Hp, Wp) float32
    (resized, in the model's channel order, normalised, zero-padded to
    multiples of ``size_divisibility``) and the resized (h, w) before padding.

    Args:
        meta: the export metadata (see :func:`vit_adapter.deploy.export.preprocess_metadata`).
    """
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        desc = f"{image.dtype} array of shape {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise DeployError(f"expected an (H, W, 3) uint8 RGB image, got {desc}")
    resize = meta.get("resize")
    if resize:
        from PIL import Image

        h, w = resized_shape(image.shape[0], image.shape[1], resize["short_edge"], resize["max_size"])
        if (h, w) != image.shape[:2]:
            image = np.asarray(Image.fromarray(image).resize((w, h), resize["interp"]))
    if meta["input_format"] == "BGR":
        image = image[:, :, ::-1]
    h, w = image.shape[:2]
    mean = np.float32(meta["pixel_mean"]).reshape(3, 1, 1)
    std = np.float32(meta["pixel_std"]).reshape(3, 1, 1)
    chw = (image.transpose(2, 0, 1).astype(np.float32) - mean) / std
    d = int(meta["size_divisibility"])
    padded = np.zeros((1, 3, -(-h // d) * d, -(-w // d) * d), dtype=np.float32)
    padded[0, :, :h, :w] = chw
    return padded, (h, w)


def slide_windows(height: int, width: int, crop, stride):
    """The (y1, y2, x1, x2) windows of mmseg's ``slide_inference`` (the same arithmetic as
    ``vit_adapter.modeling.semantic_segmentor.slide_windows``, kept here without torch)."""
    (ch, cw), (sh, sw) = crop, stride
    rows = max(height - ch + sh - 1, 0) // sh + 1
    cols = max(width - cw + sw - 1, 0) // sw + 1
    out = []
    for r in range(rows):
        for c in range(cols):
            y2, x2 = min(r * sh + ch, height), min(c * sw + cw, width)
            out.append((max(y2 - ch, 0), y2, max(x2 - cw, 0), x2))
    return out


def _bilinear_matrix(n_out: int, n_in: int) -> np.ndarray:
    """(n_out, n_in) weights of 1-D bilinear resizing, ``align_corners=False`` (torch's rule:
    source coordinate (i + 0.5) * n_in / n_out - 0.5, clamped at 0)."""
    src = np.maximum((np.arange(n_out, dtype=np.float64) + 0.5) * n_in / n_out - 0.5, 0)
    lo = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    hi = np.minimum(lo + 1, n_in - 1)
    frac = (src - lo).astype(np.float32)
    m = np.zeros((n_out, n_in), dtype=np.float32)
    np.add.at(m, (np.arange(n_out), lo), 1 - frac)
    np.add.at(m, (np.arange(n_out), hi), frac)
    return m


def resize_scores(scores: np.ndarray, height: int, width: int) -> np.ndarray:
    """(C, h, w) -> (C, height, width) bilinear (``F.interpolate(align_corners=False)``), separable."""
    ry, rx = _bilinear_matrix(height, scores.shape[1]), _bilinear_matrix(width, scores.shape[2])
    return np.einsum("yh,chw,xw->cyx", ry, scores.astype(np.float32), rx)


class OnnxPredictor:
    """An exported detector on one image, with onnxruntime.

    Args:
        path (str): ``model.onnx`` written by tools/export_model.py.
        providers: onnxruntime execution providers (default: CPU).
        sess_options: optional ``onnxruntime.SessionOptions``.

    Calling it on an (H, W, 3) uint8 **RGB** image returns a dict of numpy arrays:
    ``boxes`` (N, 4) float32 xyxy in input pixels, ``scores`` (N,) float32,
    ``classes`` (N,) int64, ``masks`` (N, H, W) bool (when the model has a
    mask head).
    """

    def __init__(self, path: str, providers=None, sess_options=None):
        ort = require("onnxruntime")
        if not os.path.isfile(path):
            raise DeployError(f"ONNX model not found: {path}")
        try:
            self.session = ort.InferenceSession(
                path, sess_options=sess_options, providers=providers or ["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime's own exception types (InvalidProtobuf, Fail, ...)
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise DeployError(f"{path} is not a loadable ONNX model ({first})") from None
        meta = self.session.get_modelmeta().custom_metadata_map
        if METADATA_KEY not in meta:
            raise DeployError(f"{path} has no '{METADATA_KEY}' metadata: export it with tools/export_model.py")
        self.meta = json.loads(meta[METADATA_KEY])
        self.divisor = int(self.meta["size_divisibility"])

    def preprocess(self, image: np.ndarray) -> Tuple[np.ndarray, Tuple[int, int]]:
        """See :func:`preprocess` (with this model's settings)."""
        return preprocess(image, self.meta)

    def run_network(self, image: np.ndarray, image_size: Tuple[int, int]) -> Dict[str, np.ndarray]:
        """The exported graph on a (1, 3, Hp, Wp) preprocessed image (Hp, Wp
        multiples of 32) whose content is `image_size` (h, w): detections at
        that resolution (``boxes``, ``scores``, ``classes``, ``mask_probs``)."""
        d = self.divisor
        if image.ndim != 4 or image.shape[:2] != (1, 3) or image.shape[2] % d or image.shape[3] % d:
            raise DeployError(
                f"the exported network takes a (1, 3, H, W) image with H and W multiples of {d}, "
                f"got shape {tuple(image.shape)}")
        feeds = {INPUT_NAMES[0]: image.astype(np.float32, copy=False),
                 INPUT_NAMES[1]: np.asarray(image_size, dtype=np.int64)}
        names = [o.name for o in self.session.get_outputs()]
        return dict(zip(names, self.session.run(names, feeds)))

    def postprocess(self, raw: Dict[str, np.ndarray], resized: Tuple[int, int],
                    original: Tuple[int, int]) -> Dict[str, np.ndarray]:
        """Network detections at the `resized` (h, w) -> detections on the
        `original` (H, W) image (detectron2's ``detector_postprocess``)."""
        (h, w), (out_h, out_w) = resized, original
        boxes = raw["boxes"].astype(np.float32) * np.float32([out_w / w, out_h / h] * 2)
        boxes[:, 0::2] = boxes[:, 0::2].clip(0, out_w)
        boxes[:, 1::2] = boxes[:, 1::2].clip(0, out_h)
        keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        out = {"boxes": boxes[keep], "scores": raw["scores"][keep].astype(np.float32),
               "classes": raw["classes"][keep].astype(np.int64)}
        if "mask_probs" in raw:
            out["masks"] = paste_masks(raw["mask_probs"][keep], out["boxes"], out_h, out_w,
                                       self.meta.get("mask_threshold", 0.5))
        return out

    def __call__(self, image: np.ndarray) -> Dict[str, np.ndarray]:
        """(H, W, 3) uint8 RGB image -> dict of boxes, scores, classes, masks (see the class
        docstring); for an exported segmentor, ``{"sem_seg": (H, W) int64 label map}``."""
        if self.meta.get("task") == "sem_seg":
            return {"sem_seg": self.segment_scores(image).argmax(axis=0).astype(np.int64)}
        net_input, resized = self.preprocess(image)
        return self.postprocess(self.run_network(net_input, resized), resized, image.shape[:2])

    def segment_scores(self, image: np.ndarray) -> np.ndarray:
        """An exported segmentor on an (H, W, 3) uint8 RGB image: (C, H, W) logits, as the
        PyTorch ``SlidingWindowSegmentor`` computes them (slide windows summed and divided
        by the count, or the whole padded image; cropped to the resized image; resized
        bilinearly to H x W)."""
        net_input, (h, w) = self.preprocess(image)
        H, W = net_input.shape[2:]
        name = self.session.get_inputs()[0].name
        if self.meta["test_mode"] == "whole":
            logits = self.session.run(None, {name: net_input})[0][0]
        else:
            logits, count = None, np.zeros((H, W), dtype=np.float32)
            for y1, y2, x1, x2 in slide_windows(H, W, self.meta["crop_size"], self.meta["stride"]):
                crop = np.ascontiguousarray(net_input[:, :, y1:y2, x1:x2])
                out = self.session.run(None, {name: crop})[0][0]
                if logits is None:
                    logits = np.zeros((out.shape[0], H, W), dtype=np.float32)
                logits[:, y1:y2, x1:x2] += out
                count[y1:y2, x1:x2] += 1
            logits = logits / count
        logits = logits[:, :h, :w]
        if (h, w) != image.shape[:2]:
            logits = resize_scores(logits, *image.shape[:2])
        return logits
