"""The one entry point of the operator: picks a formulation, promotes dtypes.

Formulations (all compute the same function; tests check values and
gradients of each against the reference):

* ``"reference"``: :func:`.reference.ms_deform_attn_reference` (grid_sample).
* ``"embedding_bag"``: :func:`.embedding_bag.ms_deform_attn_embedding_bag`,
  the eager path with a hand-written backward (default on CPU).
* ``"gather"``: :func:`.gather.ms_deform_attn_gather`, plain indexing.
* ``"compile"``: ``torch.compile`` of ``"gather"`` (default on CUDA when
  Triton is importable).
* with ``reorder=True`` and a projection: the reorderings of
  :mod:`.reordered` (the projection moved across the sampling).

``impl="auto"`` picks ``"compile"`` for CUDA tensors when available, else
``"embedding_bag"``; the environment variable ``VIT_ADAPTER_MSDA_IMPL`` or the
``impl`` argument forces one. An automatically chosen ``"compile"`` that fails
falls back to ``"embedding_bag"`` with a warning; a forced one raises.
"""
import os
import warnings
from typing import Optional, Tuple

import torch
import torch.nn.functional as F

from .embedding_bag import ms_deform_attn_embedding_bag
from .gather import ms_deform_attn_gather
from .reference import ms_deform_attn_reference, shapes_as_list
from .reordered import ms_deform_attn_output_projected, ms_deform_attn_project_last

__all__ = ["IMPLEMENTATIONS", "IMPL_ENV_VAR", "ms_deform_attn", "select_impl"]

IMPLEMENTATIONS = ("reference", "embedding_bag", "gather", "compile")
IMPL_ENV_VAR = "VIT_ADAPTER_MSDA_IMPL"

_COMPILED = None
_COMPILE_FAILED = False


def _compile_available(device: torch.device) -> bool:
    if device.type != "cuda" or not hasattr(torch, "compile"):
        return False
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def _compiled_gather():
    global _COMPILED
    if _COMPILED is None:
        _COMPILED = torch.compile(ms_deform_attn_gather, dynamic=None)
    return _COMPILED


def _requested_impl(impl: str) -> Tuple[str, str]:
    """(requested name, where it came from): the argument, else the env var."""
    if impl == "auto":
        env = os.environ.get(IMPL_ENV_VAR, "").strip().lower()
        if env and env != "auto":
            impl, source = env, f"${IMPL_ENV_VAR}"
        else:
            return "auto", ""
    else:
        source = "impl"
    if impl not in IMPLEMENTATIONS:
        raise ValueError(
            f"ms_deform_attn: {source} must be 'auto' or one of {IMPLEMENTATIONS}, got {impl!r}"
        )
    return impl, source


def select_impl(device, impl: str = "auto") -> str:
    """Name of the implementation :func:`ms_deform_attn` uses for tensors on `device`.

    A forced choice (``impl`` argument, else ``$VIT_ADAPTER_MSDA_IMPL`` unless
    it is "auto") wins; otherwise "compile" on CUDA with Triton importable
    (unless it failed before in this process), else "embedding_bag".
    """
    requested, _ = _requested_impl(impl)
    if requested != "auto":
        return requested
    if _compile_available(torch.device(device)) and not _COMPILE_FAILED:
        return "compile"
    return "embedding_bag"


def _check_op_inputs(value, shapes, sampling_locations, attention_weights, features: bool):
    """Cheap shape checks of the operator's contract (host-side)."""
    want = "(N, S, C) features" if features else "(N, S, M, Dh)"
    if value.dim() != (3 if features else 4):
        raise ValueError(f"ms_deform_attn: value must be {want}, got {tuple(value.shape)}")
    n, s = value.shape[:2]
    if sum(h * w for h, w in shapes) != s:
        raise ValueError(
            f"ms_deform_attn: value_spatial_shapes {shapes} give {sum(h * w for h, w in shapes)} "
            f"value tokens, value has S = {s}")
    loc = sampling_locations
    m = "M" if features else value.shape[2]  # with features, the locations say how many heads
    if (loc.dim() != 6 or loc.shape[0] != n or loc.shape[2] != (loc.shape[2] if features else m)
            or loc.shape[3] != len(shapes) or loc.shape[5] != 2):
        raise ValueError(
            f"ms_deform_attn: sampling_locations must be (N, Lq, M, L, P, 2) = ({n}, Lq, {m}, "
            f"{len(shapes)}, P, 2), got {tuple(loc.shape)}")
    if tuple(attention_weights.shape) != tuple(loc.shape[:5]):
        raise ValueError(
            f"ms_deform_attn: attention_weights must be (N, Lq, M, L, P) = {tuple(loc.shape[:5])}, "
            f"got {tuple(attention_weights.shape)}")


def _run(chosen: str, impl: str, value, value_spatial_shapes, shapes, sampling_locations, attention_weights):
    global _COMPILE_FAILED
    if chosen == "reference":  # the given shapes: traced values stay traced (ONNX export)
        return ms_deform_attn_reference(value, value_spatial_shapes, sampling_locations, attention_weights)
    if chosen == "gather":
        return ms_deform_attn_gather(value, shapes, sampling_locations, attention_weights)
    if chosen == "compile":
        # Python ints, so the compiled graph specialises on the level sizes.
        compiled = _compiled_gather()
        if _requested_impl(impl)[0] == "compile":
            return compiled(value, shapes, sampling_locations, attention_weights)
        try:
            return compiled(value, shapes, sampling_locations, attention_weights)
        except Exception as e:  # noqa: BLE001 - any compiler failure: use the eager path
            _COMPILE_FAILED = True
            warnings.warn(
                f"ms_deform_attn: the torch.compile path failed ({type(e).__name__}: {e}); "
                f"using the eager 'embedding_bag' path from now on (set {IMPL_ENV_VAR} to choose)."
            )
    return ms_deform_attn_embedding_bag(value, shapes, sampling_locations, attention_weights)


def ms_deform_attn(
    value: torch.Tensor,
    value_spatial_shapes,
    level_start_index: Optional[torch.Tensor],
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
    impl: str = "auto",
    *,
    value_proj: Optional[Tuple[torch.Tensor, Optional[torch.Tensor]]] = None,
    output_proj: Optional[torch.Tensor] = None,
    reorder: bool = False,
) -> torch.Tensor:
    """Multi-scale deformable attention, dispatched to one formulation.

    Mixed dtypes (e.g. half-precision values under autocast with float32
    locations) are computed in the widest one, as the official CUDA op
    casts to float32.

    Args:
        value: (N, S, M, Dh), levels concatenated, each row-major; with
            `value_proj`, the (N, S, C) features the values are projected from.
        value_spatial_shapes: (L, 2) long tensor (or sequence) of (H_l, W_l).
        level_start_index: (L,) start of each level in S, or None. Accepted for
            the official op's signature; the layout follows from the shapes.
        sampling_locations: (N, Lq, M, L, P, 2) normalised (x, y), see
            :func:`.reference.ms_deform_attn_reference`.
        attention_weights: (N, Lq, M, L, P).
        impl: "auto" or one of :data:`IMPLEMENTATIONS` (see :func:`select_impl`).
        value_proj: optional ``(weight (M * Dh, C), bias (M * Dh,) or None)``:
            the values are ``linear(value, weight, bias)`` split into M heads.
        output_proj: optional weight (D_out, M * Dh): the result is projected
            by it (no bias).
        reorder: evaluate the given projection across the sampling
            (:mod:`.reordered`: ``value_proj`` after it, else ``output_proj``
            before it); no-autograd use, `impl` is then not consulted.

    Returns:
        (N, Lq, M * Dh), or (N, Lq, D_out) with `output_proj`.
    """
    shapes = shapes_as_list(value_spatial_shapes)
    _check_op_inputs(value, shapes, sampling_locations, attention_weights, features=value_proj is not None)
    if reorder and value_proj is None and output_proj is None:
        raise ValueError("ms_deform_attn: reorder=True needs value_proj or output_proj")
    projections = [t for t in (*(value_proj or ()), output_proj) if t is not None]
    dtype = value.dtype
    for t in (sampling_locations, attention_weights, *projections):
        dtype = torch.promote_types(dtype, t.dtype)
    value, sampling_locations, attention_weights = (
        t.to(dtype) for t in (value, sampling_locations, attention_weights))
    if value_proj is not None:
        value_proj = tuple(None if t is None else t.to(dtype) for t in value_proj)
    if output_proj is not None:
        output_proj = output_proj.to(dtype)

    if reorder and value_proj is not None:
        out = ms_deform_attn_project_last(value, shapes, sampling_locations, attention_weights, *value_proj)
        return out if output_proj is None else F.linear(out, output_proj)
    if value_proj is not None:
        n, s, _ = value.shape
        value = F.linear(value, *value_proj).view(n, s, sampling_locations.shape[2], -1)
    if reorder:
        return ms_deform_attn_output_projected(value, shapes, sampling_locations, attention_weights, output_proj)
    chosen = select_impl(value.device, impl)
    out = _run(chosen, impl, value, value_spatial_shapes, shapes, sampling_locations, attention_weights)
    return out if output_proj is None else F.linear(out, output_proj)
