"""The operator's one entry point: Deformable-DETR's contract, one formulation
chosen by name, dtypes promoted.

Formulations (all compute the same function; tests check values and
gradients of each against the reference):

* ``"reference"``: :func:`.reference.ms_deform_attn_reference` (grid_sample).
* ``"embedding_bag"``: :func:`.embedding_bag.ms_deform_attn_embedding_bag`,
  the eager path with a hand-written backward.
* ``"gather"``: :func:`.gather.ms_deform_attn_gather`, plain indexing.
* ``"compile"``: ``torch.compile`` of ``"gather"``.

``"auto"`` resolves in :func:`select_impl`, the only place the choice is
made, from where the call runs: ``"reference"`` inside an ONNX export or a
trace for a saved graph (:func:`saved_graph_trace`, e.g. TorchScript: a
shape-generic graph of standard ops), ``"embedding_bag"`` inside any other
trace (fvcore: tracing cannot see through ``torch.compile``), ``"compile"``
on CUDA with Triton importable, else ``"embedding_bag"``. A named
formulation is always honoured. Falling back when a compile fails is the
caller's decision (:class:`.module.MSDeformAttn` records it on itself); this
function raises.
"""
import contextlib
import contextvars
from typing import Iterator, Optional

import torch

from .embedding_bag import ms_deform_attn_embedding_bag
from .gather import ms_deform_attn_gather
from .reference import ms_deform_attn_reference, shapes_as_list

__all__ = ["IMPLEMENTATIONS", "check_impl", "compile_available", "ms_deform_attn", "saved_graph_trace",
           "select_impl"]

IMPLEMENTATIONS = ("reference", "embedding_bag", "gather", "compile")

_COMPILED = None  # the compiled gather formulation, built on first use

# True inside saved_graph_trace(): traces made there become files (TorchScript, ONNX).
_SAVED_GRAPH_TRACE = contextvars.ContextVar("vit_adapter_saved_graph_trace", default=False)


@contextlib.contextmanager
def saved_graph_trace() -> Iterator[None]:
    """Context for tracing a graph that is saved and run elsewhere (``torch.jit.trace``
    for TorchScript; ONNX export says so itself): ``"auto"`` runs ``"reference"``
    there, the formulation of standard ops only. Changes no module."""
    token = _SAVED_GRAPH_TRACE.set(True)
    try:
        yield
    finally:
        _SAVED_GRAPH_TRACE.reset(token)


def compile_available(device) -> bool:
    """Whether ``"auto"`` picks ``"compile"`` on `device`: CUDA with Triton importable."""
    if torch.device(device).type != "cuda" or not hasattr(torch, "compile"):
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


def check_impl(impl: str, who: str = "ms_deform_attn") -> str:
    """`impl` if it is "auto" or one of :data:`IMPLEMENTATIONS`, else a one-line ValueError."""
    if impl != "auto" and impl not in IMPLEMENTATIONS:
        raise ValueError(f"{who}: impl must be 'auto' or one of {IMPLEMENTATIONS}, got {impl!r}")
    return impl


def select_impl(device, impl: str = "auto") -> str:
    """The formulation :func:`ms_deform_attn` runs for `impl` on tensors on
    `device` (see the module docstring): `impl` itself unless it is "auto"."""
    if check_impl(impl) != "auto":
        return impl
    if torch.onnx.is_in_onnx_export() or (_SAVED_GRAPH_TRACE.get() and torch.jit.is_tracing()):
        return "reference"
    if torch.jit.is_tracing():
        return "embedding_bag"
    return "compile" if compile_available(device) else "embedding_bag"


def _check_op_inputs(value, shapes, sampling_locations, attention_weights):
    """Cheap shape checks of the operator's contract (host-side)."""
    if value.dim() != 4:
        raise ValueError(f"ms_deform_attn: value must be (N, S, M, Dh), got {tuple(value.shape)}")
    n, s, m = value.shape[:3]
    if sum(h * w for h, w in shapes) != s:
        raise ValueError(
            f"ms_deform_attn: value_spatial_shapes {shapes} give {sum(h * w for h, w in shapes)} "
            f"value tokens, value has S = {s}")
    loc = sampling_locations
    if loc.dim() != 6 or loc.shape[0] != n or loc.shape[2] != m or loc.shape[3] != len(shapes) or loc.shape[5] != 2:
        raise ValueError(
            f"ms_deform_attn: sampling_locations must be (N, Lq, M, L, P, 2) = ({n}, Lq, {m}, "
            f"{len(shapes)}, P, 2), got {tuple(loc.shape)}")
    if tuple(attention_weights.shape) != tuple(loc.shape[:5]):
        raise ValueError(
            f"ms_deform_attn: attention_weights must be (N, Lq, M, L, P) = {tuple(loc.shape[:5])}, "
            f"got {tuple(attention_weights.shape)}")


def ms_deform_attn(
    value: torch.Tensor,
    value_spatial_shapes,
    level_start_index: Optional[torch.Tensor],
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
    impl: str = "auto",
) -> torch.Tensor:
    """Multi-scale deformable attention (Deformable-DETR's operator contract).

    Mixed dtypes (e.g. half-precision values under autocast with float32
    locations) are computed in the widest one, as the official CUDA op
    casts to float32.

    Args:
        value: (N, S, M, Dh), levels concatenated, each row-major.
        value_spatial_shapes: (L, 2) long tensor (or sequence) of (H_l, W_l).
        level_start_index: (L,) start of each level in S, or None. Accepted for
            the official op's signature; the layout follows from the shapes.
        sampling_locations: (N, Lq, M, L, P, 2) normalised (x, y), see
            :func:`.reference.ms_deform_attn_reference`.
        attention_weights: (N, Lq, M, L, P).
        impl: "auto" or one of :data:`IMPLEMENTATIONS` (see :func:`select_impl`).

    Returns:
        (N, Lq, M * Dh).
    """
    chosen = select_impl(value.device, impl)
    traced = chosen == "reference" and torch.jit.is_tracing()
    shapes = None if traced else shapes_as_list(value_spatial_shapes)
    if shapes is not None:
        _check_op_inputs(value, shapes, sampling_locations, attention_weights)
    dtype = torch.promote_types(torch.promote_types(value.dtype, sampling_locations.dtype), attention_weights.dtype)
    value, sampling_locations, attention_weights = (
        t.to(dtype) for t in (value, sampling_locations, attention_weights))
    if chosen == "reference":  # the given shapes: traced sizes stay traced (ONNX export)
        return ms_deform_attn_reference(value, value_spatial_shapes, sampling_locations, attention_weights)
    if chosen == "gather":
        return ms_deform_attn_gather(value, shapes, sampling_locations, attention_weights)
    if chosen == "compile":
        # Python ints, so the compiled graph specialises on the level sizes.
        return _compiled_gather()(value, shapes, sampling_locations, attention_weights)
    return ms_deform_attn_embedding_bag(value, shapes, sampling_locations, attention_weights)
