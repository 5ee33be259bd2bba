"""FLOP counting with fvcore, including the ops fvcore does not know.

Convention (fvcore's): one fused multiply-add counts as one flop, so the
numbers are multiply-accumulates (MACs); papers that quote "FLOPs" as
2 x MACs give twice these numbers.

Counted: everything fvcore counts by default (linear / matmul / bmm /
einsum / conv / conv-transpose, norms, upsampling) plus two handles:

* ``aten::scaled_dot_product_attention`` (the ViT's attention, global or
  windowed): ``B * heads * Lq * Lk * (d_qk + d_v)``, the two matmuls
  Q K^T and A V; the softmax is not counted.
* multi-scale deformable attention (:mod:`vit_adapter.layers.ms_deform_attn`):
  ``N * Lq * M * L * P * 4 * Dh``: per query, head, level and point, the
  four bilinear corners times the channel width, each one weighted multiply-add
  (the attention weight is folded into the corner weights, exactly what the
  ``"embedding_bag"`` path executes). Counted on the ``_BilinearGatherSum``
  autograd function of that path (what "auto" runs inside a trace, see
  :func:`vit_adapter.layers.ms_deform_attn.select_impl`) and, for the
  reference path, on ``aten::grid_sampler`` (4 corners per sampled element:
  the same number).

Every projection of the deformable attention (``sampling_offsets``,
``attention_weights``, ``value_proj``, ``output_proj``) is an ``nn.Linear``
called as a module, so ``by_module`` attributes its GEMM to it.

Not counted (as fvcore does for all element-wise work): softmax, GELU,
residual adds, the corner-weight / index arithmetic of the deformable op.

Whole detectors: :func:`count_detector_flops` counts a detectron2 R-CNN on one
image (backbone, RPN, RoI heads at the model's own detections) with these
handles, and reports beside it what fvcore counts without them, which is what
detectron2's ``tools/analyze_model.py --tasks flop`` reports: that tool builds
its ``FlopCountAnalysis`` inside ``do_flop`` and neither it nor fvcore offers a
public way to add op handles there (fvcore's defaults are a private module
dict), so it leaves out every attention and deformable-sampling op
(docs/detectron2_tools.md has both numbers for the demo model).
"""
import math
from typing import Any, Dict

import torch

__all__ = ["FLOP_HANDLES", "count_detector_flops", "count_flops"]


def _shape(value) -> list:
    return value.type().sizes()


def _sdpa_flops(inputs, outputs) -> int:
    q, k, v = (_shape(inputs[i]) for i in range(3))
    batch = math.prod(q[:-2])
    return batch * q[-2] * k[-2] * (q[-1] + v[-1])


def _bilinear_gather_flops(inputs, outputs) -> int:
    # _BilinearGatherSum.apply(table (R, Dh), index (B, L*P*4), weights (B, L*P*4), ...)
    table, index = _shape(inputs[0]), _shape(inputs[1])
    return index[0] * index[1] * table[1]


def _grid_sampler_flops(inputs, outputs) -> int:
    # grid_sampler(input (N, C, H, W), grid (N, Ho, Wo, 2), ...) -> (N, C, Ho, Wo):
    # 4 corners per output element.
    return math.prod(_shape(outputs[0])) * 4


FLOP_HANDLES = {
    "aten::scaled_dot_product_attention": _sdpa_flops,
    "prim::PythonOp._BilinearGatherSum": _bilinear_gather_flops,
    "aten::grid_sampler": _grid_sampler_flops,
}


def count_flops(model: torch.nn.Module, inputs: Any) -> Dict[str, Any]:
    """fvcore FlopCountAnalysis with :data:`FLOP_HANDLES`, in eval mode.

    Traced (and with autograd enabled), so every module runs its plain
    formulation (the fast branches are off while tracing, see
    :func:`vit_adapter.layers.fast_path.fast_path_ok`), and the deformable
    operator's "auto" runs ``"embedding_bag"`` (tracing cannot see through
    ``torch.compile``).

    Returns:
        dict: ``total`` (MACs), ``by_operator`` and ``by_module`` (MACs per
        op kind / per module name, "" = the whole model), ``unsupported``
        (op name -> call count of ops that were not counted).
    """
    from fvcore.nn import FlopCountAnalysis

    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            fca = FlopCountAnalysis(model, inputs).set_op_handle(**FLOP_HANDLES)
            fca.unsupported_ops_warnings(False)
            fca.uncalled_modules_warnings(False)
            fca.tracer_warnings("none")
            result = {
                "total": fca.total(),
                "by_operator": dict(fca.by_operator()),
                "by_module": dict(fca.by_module()),
                "unsupported": dict(fca.unsupported_ops()),
            }
    finally:
        model.train(was_training)
    return result


def count_detector_flops(model: torch.nn.Module, image: torch.Tensor) -> Dict[str, Any]:
    """FLOPs (MACs) of a detectron2 R-CNN `model` on one image, as it runs at test time.

    The model is traced as :class:`vit_adapter.deploy.export.DetectorGraph`
    (normalised padded image -> detections; detectron2's resize and
    postprocessing are not counted, as in detectron2's own tool).

    Args:
        model: GeneralizedRCNN (weights loaded; the RoI heads' cost depends on
            the number of detections it makes).
        image: (3, H, W) tensor in the model's input format, already resized
            (what the test data loader gives as ``"image"``).

    Returns:
        dict: ``total`` (MACs with :data:`FLOP_HANDLES`), ``fvcore_default``
        (MACs without them: what ``tools/analyze_model.py`` reports), and
        ``by_operator`` / ``by_module`` / ``unsupported`` as :func:`count_flops`.
    """
    from fvcore.nn import FlopCountAnalysis

    from vit_adapter.deploy.export import DetectorGraph

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            images = model.preprocess_image([{"image": image}])
        inputs = (images.tensor, torch.tensor(images.image_sizes[0]))
        graph = DetectorGraph(model).eval()
        result = count_flops(graph, inputs)
        with torch.enable_grad():
            plain = FlopCountAnalysis(graph, inputs)
            plain.unsupported_ops_warnings(False)
            plain.uncalled_modules_warnings(False)
            plain.tracer_warnings("none")
            result["fvcore_default"] = plain.total()
    finally:
        model.train(was_training)
    return result
