"""When a module may take its no-grad formulation.

Modules with a faster formulation of their own function (same values to
float rounding, written with their weights used directly) keep it as a branch
beside the plain code, timm-style: a ``fast_path`` flag stored on the module
at construction (like timm's ``self.fused_attn``), and :func:`fast_path_ok`
deciding per call whether the flag applies. A module's own extra conditions
(e.g. :class:`~vit_adapter.layers.ms_deform_attn.MSDeformAttn`'s operator
formulation) sit next to that call, in one method of the module.
"""
import torch
from torch import nn

__all__ = ["fast_path_ok"]


def fast_path_ok(module: nn.Module, x: torch.Tensor) -> bool:
    """Whether `module` (its ``fast_path`` flag on) may run its fast branch on `x`.

    Needs eval mode (no dropout, no batch statistics) and a call that needs
    nothing the fast branch skips: no autograd (no backward to record, no
    forward hooks on the submodules whose weights it reads directly), no
    autocast (the branches combine float32 weights with activations
    explicitly), not tracing or scripting (a traced graph is the plain
    formulation, whose shapes follow the input).
    """
    return (
        getattr(module, "fast_path", False)
        and not module.training
        and not torch.is_grad_enabled()
        and not torch.is_autocast_enabled(x.device.type)
        and not torch.jit.is_tracing()
        and not torch.jit.is_scripting()
    )
