"""Export a ViT-Adapter detector (Mask / Cascade Mask R-CNN) to ONNX.

The graph is traced (``torch.onnx.export(dynamo=False)``, opset 17) with
dynamic input height and width (multiples of 32). It takes the normalised,
zero-padded image and the (h, w) of its content, and runs the backbone, RPN
(with NMS), RoIAlign, box and mask heads inside the graph (torchvision's ONNX
symbolics); it ends with the detections at the resized resolution:

    image (1, 3, H, W) float32, image_size (2,) int64 (h, w)
      -> boxes (N, 4) float32, scores (N,), classes (N,) int64,
         mask_probs (N, 28, 28) float32 (mask models only)

Resizing, normalisation, padding, box rescaling and mask pasting run outside
the graph in :class:`vit_adapter.deploy.predictor.OnnxPredictor` (numpy), with
the settings stored in the model's metadata.

Tracing takes the backbone's plain formulation (:func:`exportable`):

* deformable attention: ``MSDeformAttn.impl`` set on every module for the
  export ("reference": one ``grid_sample`` per level, ONNX ``GridSample``);
* the inference rewrites of :mod:`vit_adapter.modeling.inference` (in-place
  buffers, projections moved across the sampling) are off while tracing
  (``inference.applies``);
* level sizes stay traced values: while tracing, the adapter's level table is
  built from the traced image size and the deformable attention reads the
  level sizes as traced scalars (``shapes_as_list``; Python ints would freeze
  the graph to the traced shape); token sequences become maps by ``reshape``;
* the heads' ``len(instances)`` stays traced (``compat.patch_builtin_len``).
"""
import contextlib
import json
import warnings
from typing import Dict, Iterator, Tuple

import torch
from torch import nn

from vit_adapter.compat import patch_builtin_len
from vit_adapter.deploy.predictor import INPUT_NAMES, METADATA_KEY, OUTPUT_NAMES, DeployError, require
from vit_adapter.layers.ms_deform_attn import MSDeformAttn

__all__ = ["EXPORT_IMPLS", "SUPPORTED_FORMATS", "exportable", "DetectorGraph", "preprocess_metadata",
           "check_size", "trace_size", "export_detector", "export_module", "test_augmentations", "pytorch_detections",
           "SegmentorGraph", "is_segmentor", "segmentor_metadata", "export_segmentor", "pytorch_label_map"]

SUPPORTED_FORMATS = ("onnx",)
#: Deformable-attention implementations that trace to a shape-generic graph.
EXPORT_IMPLS = ("reference",)
OPSET = 17
SIZE_DIVISIBILITY = 32

@contextlib.contextmanager
def exportable(model: nn.Module, impl: str = "reference") -> Iterator[nn.Module]:
    """Context in which `model` traces to a shape-generic graph (see the module
    docstring): every :class:`MSDeformAttn` uses `impl`, the inference
    rewrites are off and level sizes stay traced. Restores everything on exit."""
    if impl not in EXPORT_IMPLS:
        raise DeployError(f"export: deformable attention impl must be one of {EXPORT_IMPLS}, got {impl!r}")
    attns = [m for m in model.modules() if isinstance(m, MSDeformAttn)]
    saved = [m.impl for m in attns]
    try:
        for m in attns:
            m.impl = impl
        yield model
    finally:
        for m, old in zip(attns, saved):
            m.impl = old


class DetectorGraph(nn.Module):
    """A detectron2 R-CNN (GeneralizedRCNN with mask or box heads) as the
    traced graph: (1, 3, H, W) normalised padded image and (2,) int64 image
    size (h, w) of its content -> boxes, scores, classes[, mask_probs] at (h, w)
    (see the module docstring)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor, image_size: torch.Tensor):
        from detectron2.structures import ImageList

        images = ImageList(image, [image_size])
        features = self.model.backbone(images.tensor)
        proposals, _ = self.model.proposal_generator(images, features, None)
        instances = self.model.roi_heads(images, features, proposals, None)[0][0]
        out = (instances.pred_boxes.tensor, instances.scores, instances.pred_classes)
        if instances.has("pred_masks"):
            out += (instances.pred_masks[:, 0],)
        return out


def _test_resize(cfg) -> Dict:
    """The config's test-time ResizeShortestEdge as metadata, or {} for no resize."""
    from detectron2.data import transforms as T

    augs = test_augmentations(cfg)
    if not augs:
        return {}
    if len(augs) != 1 or not isinstance(augs[0], T.ResizeShortestEdge):
        raise DeployError(f"export: only one ResizeShortestEdge test augmentation is supported, got {augs}")
    aug = augs[0]
    lengths = list(aug.short_edge_length) if isinstance(aug.short_edge_length, (list, tuple)) else [aug.short_edge_length]
    if len(set(lengths)) != 1:
        raise DeployError(f"export: the test ResizeShortestEdge must have one short edge length, got {lengths}")
    return {"short_edge": int(lengths[0]), "max_size": int(aug.max_size), "interp": int(aug.interp)}


def preprocess_metadata(cfg, model: nn.Module) -> Dict:
    """What :class:`OnnxPredictor` needs to reproduce detectron2's pre- and
    postprocessing: test resize, input format, pixel mean / std, padding."""
    return {
        "resize": _test_resize(cfg),
        "input_format": model.input_format,
        "pixel_mean": [float(v) for v in model.pixel_mean.flatten()],
        "pixel_std": [float(v) for v in model.pixel_std.flatten()],
        "size_divisibility": SIZE_DIVISIBILITY,
        "mask_threshold": 0.5,
    }


def check_size(height: int, width: int):
    """DeployError unless the network input (height, width) are multiples of 32."""
    if height % SIZE_DIVISIBILITY or width % SIZE_DIVISIBILITY or height <= 0 or width <= 0:
        raise DeployError(
            f"export: input height and width must be positive multiples of {SIZE_DIVISIBILITY}, "
            f"got {height}x{width}")


def trace_size(model: nn.Module) -> Tuple[int, int]:
    """A (H, W) to trace `model` at that takes every shape-dependent branch
    the way general inputs do: H != W, a token grid other than the ViT's
    pretraining grid (else the position embedding is not resized), and not a
    multiple of the attention window where some grid can need window padding
    (else the padding is skipped). Python-level branches like these are frozen
    into the traced graph."""
    grids = {tuple(m.pretrain_grid) for m in model.modules() if hasattr(m, "pretrain_grid")}
    windows = {m.window_size for m in model.modules() if getattr(m, "window_size", 0) and hasattr(m, "qkv")}
    stride = 16
    for h in range(320, 2048, SIZE_DIVISIBILITY):
        w = h + 3 * SIZE_DIVISIBILITY
        grid = (h // stride, w // stride)
        # Grids of valid inputs are even: windows of 1 or 2 never pad, others must pad here.
        padded = all(ws <= 2 or grid[0] % ws or grid[1] % ws for ws in windows)
        if grid not in grids and padded:
            return h, w
    raise DeployError(f"export: no trace size found for pretraining grids {grids} and windows {windows}")


def export_module(module: nn.Module, args: Tuple[torch.Tensor, ...], path: str, input_names, output_names,
                  dynamic_axes: Dict, metadata: Dict = None):
    """Trace `module` (put in eval mode) on `args` to ONNX at `path` under
    :func:`exportable`, storing `metadata` as JSON under the ``vit_adapter`` key."""
    onnx = require("onnx")
    module.eval()  # export restores the wrapper's mode recursively: keep it eval
    with exportable(module), patch_builtin_len(["vit_adapter.modeling.roi_heads"]), torch.no_grad(), \
            warnings.catch_warnings():
        # The Python branches these warn about are taken the general way at trace_size
        # and checked at other shapes by tests/deploy/test_export.py.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(
            module, args, path, dynamo=False, opset_version=OPSET, input_names=list(input_names),
            output_names=list(output_names), dynamic_axes=dynamic_axes,
            # No exporter folding: it would freeze shapes it wrongly infers as static
            # (onnxruntime folds the weight-only subgraphs when it loads the model).
            do_constant_folding=False,
        )
    proto = onnx.load(path)
    _add_missing_initializers(proto, module)
    if metadata is not None:
        entry = proto.metadata_props.add()
        entry.key, entry.value = METADATA_KEY, json.dumps(metadata)
    onnx.save(proto, path)
    return path


def _all_nodes(graph):
    """Nodes of `graph` and of its subgraphs (If / Loop bodies)."""
    for node in graph.node:
        yield node
        for attr in node.attribute:
            for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                yield from _all_nodes(sub)


def _add_missing_initializers(proto, module: nn.Module):
    """Repair two defects of the TorchScript exporter without constant folding:
    it leaves out some tensors the graph reads (e.g. BatchNorm statistics read
    by the backbone's conv-norm folding; added from `module`'s state), and it
    aliases deduplicated initializers with Identity nodes that onnxruntime's
    optimizer then mishandles (replaced by copies of the initializer)."""
    from onnx import numpy_helper

    graph = proto.graph
    nodes = list(_all_nodes(graph))
    known = {t.name for t in graph.initializer} | {i.name for i in graph.input}
    known |= {o for node in nodes for o in node.output}
    state = dict(module.named_parameters())
    state.update(module.named_buffers())
    missing = {i for node in nodes for i in node.input if i and i not in known and i in state}
    for name in sorted(missing):
        graph.initializer.append(numpy_helper.from_array(state[name].detach().cpu().numpy(), name))
    inits = {t.name: t for t in graph.initializer}
    aliases = [n for n in graph.node if n.op_type == "Identity" and n.input[0] in inits]
    for node in aliases:
        copy = type(inits[node.input[0]]).FromString(inits[node.input[0]].SerializeToString())
        copy.name = node.output[0]
        graph.initializer.append(copy)
        graph.node.remove(node)


def export_detector(cfg, model: nn.Module, path: str, sample: torch.Tensor = None) -> str:
    """Export a detectron2 R-CNN `model` (weights loaded) to `path`.

    Args:
        cfg: its LazyConfig (test augmentation for the metadata).
        model: GeneralizedRCNN whose backbone may contain ViT-Adapter.
        path: the .onnx file to write.
        sample: optional (1, 3, H, W) float32 preprocessed image to trace with
            (H, W multiples of 32); default a random one of :func:`trace_size`.
    """
    if sample is None:
        sample = torch.randn(1, 3, *trace_size(model), generator=torch.Generator().manual_seed(0))
    if sample.dim() != 4 or sample.shape[:2] != (1, 3):
        raise DeployError(f"export: the sample must be a (1, 3, H, W) image, got {tuple(sample.shape)}")
    check_size(*sample.shape[2:])
    graph = DetectorGraph(model).eval()
    image_size = torch.tensor(sample.shape[2:], dtype=torch.long)
    names = list(OUTPUT_NAMES if model.roi_heads.mask_on else OUTPUT_NAMES[:3])
    dynamic = {INPUT_NAMES[0]: {2: "height", 3: "width"}}
    dynamic.update({n: {0: "detections"} for n in names})
    return export_module(graph, (sample.to(next(model.parameters()).device), image_size), path,
                         INPUT_NAMES, names, dynamic, preprocess_metadata(cfg, model))


def test_augmentations(cfg):
    """The config's test-time augmentations, instantiated."""
    from detectron2.config import instantiate

    return [instantiate(a) for a in cfg.dataloader.test.mapper.get("augmentations", [])] if "dataloader" in cfg else []


@torch.no_grad()
def pytorch_detections(model: nn.Module, cfg, image) -> Dict:
    """The PyTorch model on an (H, W, 3) uint8 RGB numpy image, with
    detectron2's own test-time resize, as the dict :class:`OnnxPredictor`
    returns (boxes, scores, classes[, masks] as numpy arrays)."""
    import numpy as np
    from detectron2.data import transforms as T

    aug_input = T.AugInput(image)
    T.AugmentationList(test_augmentations(cfg))(aug_input)
    resized = aug_input.image[:, :, ::-1] if model.input_format == "BGR" else aug_input.image
    tensor = torch.as_tensor(np.ascontiguousarray(resized.transpose(2, 0, 1)))
    device = next(model.parameters()).device
    inst = model([{"image": tensor.to(device), "height": image.shape[0], "width": image.shape[1]}])[0]
    inst = inst["instances"].to("cpu")
    out = {"boxes": inst.pred_boxes.tensor.numpy(), "scores": inst.scores.numpy(),
           "classes": inst.pred_classes.numpy()}
    if inst.has("pred_masks"):
        out["masks"] = inst.pred_masks.numpy().astype(bool)
    return out


# --- semantic segmentation -----------------------------------------------------------------
#
# The graph is the network of one window / whole image (backbone + sem_seg_head):
#     image (1, 3, H, W) float32 (normalised, zero-padded) -> logits (1, C, H, W) float32
# Sliding windows, the count division, cropping and resizing to the input image run in numpy
# (OnnxPredictor), with the segmentor's test settings stored in the metadata.
SEG_INPUT_NAMES = ("image",)
SEG_OUTPUT_NAMES = ("logits",)


class SegmentorGraph(nn.Module):
    """A :class:`vit_adapter.modeling.semantic_segmentor.SlidingWindowSegmentor`'s network as
    the traced graph: (1, 3, H, W) normalised padded image -> (1, C, H, W) logits."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.model.network_scores(image)


def is_segmentor(model: nn.Module) -> bool:
    """Whether `model` is a semantic segmentor (has a ``sem_seg_head``)."""
    return hasattr(model, "sem_seg_head")


def segmentor_metadata(cfg, model: nn.Module) -> Dict:
    """:func:`preprocess_metadata` plus the segmentor's test settings (mode, crop, stride)."""
    if getattr(model, "augmented_test", False):
        raise DeployError("export: multi-scale / flip test is not exported; set model.test_scales=[1.0] "
                          "model.test_flip=False")
    meta = preprocess_metadata(cfg, model)
    meta.pop("mask_threshold")
    meta["size_divisibility"] = int(model.backbone.size_divisibility) or SIZE_DIVISIBILITY
    meta.update(task="sem_seg", test_mode=model.test_mode, crop_size=list(model.crop_size),
                stride=list(model.stride), num_classes=int(model.sem_seg_head.num_classes))
    return meta


def export_segmentor(cfg, model: nn.Module, path: str, sample: torch.Tensor = None) -> str:
    """Export a semantic segmentor's network (weights loaded) to `path`; arguments as
    :func:`export_detector`."""
    if sample is None:
        sample = torch.randn(1, 3, *trace_size(model), generator=torch.Generator().manual_seed(0))
    if sample.dim() != 4 or sample.shape[:2] != (1, 3):
        raise DeployError(f"export: the sample must be a (1, 3, H, W) image, got {tuple(sample.shape)}")
    check_size(*sample.shape[2:])
    dynamic = {SEG_INPUT_NAMES[0]: {2: "height", 3: "width"}, SEG_OUTPUT_NAMES[0]: {2: "height", 3: "width"}}
    return export_module(SegmentorGraph(model).eval(), (sample.to(next(model.parameters()).device),), path,
                         SEG_INPUT_NAMES, SEG_OUTPUT_NAMES, dynamic, segmentor_metadata(cfg, model))


@torch.no_grad()
def pytorch_label_map(model: nn.Module, cfg, image):
    """The PyTorch segmentor on an (H, W, 3) uint8 RGB numpy image with the config's test
    resize: ``{"sem_seg": (H, W) int64 label map}``, as :class:`OnnxPredictor` returns."""
    import numpy as np
    from detectron2.data import transforms as T

    aug_input = T.AugInput(image)
    T.AugmentationList(test_augmentations(cfg))(aug_input)
    resized = aug_input.image[:, :, ::-1] if model.input_format == "BGR" else aug_input.image
    tensor = torch.as_tensor(np.ascontiguousarray(resized.transpose(2, 0, 1)))
    device = next(model.parameters()).device
    out = model([{"image": tensor.to(device), "height": image.shape[0], "width": image.shape[1]}])[0]
    return {"sem_seg": out["sem_seg"].argmax(dim=0).cpu().numpy().astype(np.int64)}
