"""Multi-scale deformable attention (Zhu et al., "Deformable DETR", ICLR 2021),
as used by ViT-Adapter's injector and extractor. Pure PyTorch: no compile
step, runs on CPU and GPU.

* :mod:`.reference`: the grid_sample formulation, the oracle.
* :mod:`.corners`: the bilinear-corner convention the other formulations share.
* :mod:`.embedding_bag`: the eager CPU formulation and its backward.
* :mod:`.gather`: the formulation ``torch.compile`` fuses (CUDA).
* :mod:`.dispatch`: :func:`ms_deform_attn`, the operator (Deformable-DETR's
  contract) and :func:`select_impl`, where "auto" is resolved.
* :mod:`.reordered`: a projection moved across the sampling (used by
  :class:`MSDeformAttn` built with ``reorder``).
* :mod:`.module`: :class:`MSDeformAttn`, the projections, their init and the
  module's one forward.
"""
from .dispatch import IMPLEMENTATIONS, ms_deform_attn, saved_graph_trace, select_impl
from .module import REORDERINGS, MSDeformAttn
from .reference import ms_deform_attn_reference

__all__ = ["IMPLEMENTATIONS", "REORDERINGS", "MSDeformAttn", "ms_deform_attn", "ms_deform_attn_reference",
           "saved_graph_trace", "select_impl"]
