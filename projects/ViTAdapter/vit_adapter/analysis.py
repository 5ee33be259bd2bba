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
"""
import math
from typing import Any, Dict

import torch

__all__ = ["FLOP_HANDLES", "count_flops"]


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
