"""Multi-scale deformable attention (Zhu et al., "Deformable DETR", ICLR 2021),
as used by ViT-Adapter's injector and extractor. Pure PyTorch: no compile
step, runs on CPU and GPU.

* :mod:`.reference`: the grid_sample formulation, the oracle.
* :mod:`.corners`: the bilinear-corner convention the other formulations share.
* :mod:`.embedding_bag`: the eager CPU formulation and its backward.
* :mod:`.gather`: the formulation ``torch.compile`` fuses (CUDA).
* :mod:`.reordered`: the projections moved across the sampling (inference).
* :mod:`.dispatch`: :func:`ms_deform_attn`, the one entry point.
* :mod:`.module`: :class:`MSDeformAttn`, the projections and their init.
"""
from .dispatch import IMPL_ENV_VAR, IMPLEMENTATIONS, ms_deform_attn, select_impl
from .module import MSDeformAttn
from .reference import ms_deform_attn_reference

__all__ = ["IMPLEMENTATIONS", "IMPL_ENV_VAR", "MSDeformAttn", "ms_deform_attn", "ms_deform_attn_reference",
           "select_impl"]
