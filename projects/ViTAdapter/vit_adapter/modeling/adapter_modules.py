"""ViT-Adapter's adapter parts: spatial prior module, injector, extractor, ConvFFN.

Module and parameter names mirror the official release
(``detection/mmdet_custom/models/backbones/adapter_modules.py``) so official
checkpoints map by name: ``spm.stem.0`` ... ``spm.fc4``, ``injector.gamma``,
``injector.query_norm``/``feat_norm``/``attn``, ``extractor.ffn.fc1``,
``extractor.ffn.dwconv.dwconv``, ``extractor.ffn_norm`` and so on.

Token layout used throughout: the adapter's multi-scale tokens ``c`` are the
1/8, 1/16 and 1/32 maps of the image, each flattened row-major, concatenated
in that order: (B, 4n + n + n/4, D) with n = (H/16) * (W/16).

Every module has one forward that calls its submodules as modules. The
faster no-grad formulations live in the module that owns them, as a branch
beside the plain code (chosen by :func:`vit_adapter.layers.fast_path.fast_path_ok`):
the spatial prior module folds eval-mode norms into its convs; the injector's
and the extractor's deformable attention move one projection across the
sampling (:class:`~vit_adapter.layers.ms_deform_attn.MSDeformAttn` built with
``reorder``).
"""
import contextlib
from functools import partial
from typing import Callable, List, NamedTuple, Optional, Sequence, Tuple

import torch
import torch.distributed as dist
import torch.nn.functional as F
import torch.utils.checkpoint as cp
from timm.layers import DropPath, trunc_normal_
from torch import nn

from vit_adapter.compat import get_norm
from vit_adapter.layers.affine import fold_norm_into_conv, is_fixed_affine
from vit_adapter.layers.fast_path import fast_path_ok
from vit_adapter.layers.ms_deform_attn import MSDeformAttn

__all__ = [
    "init_adapter_weights",
    "build_norm",
    "get_reference_points",
    "level_shapes",
    "DeformInputs",
    "deform_inputs",
    "SpatialPriorModule",
    "DWConv",
    "ConvFFN",
    "Injector",
    "Extractor",
    "InteractionBlock",
]


def init_adapter_weights(m: nn.Module):
    """The release's adapter initialisation, for ``module.apply``: truncated-normal
    Linear (std 0.02, zero bias), unit / zero norms, He-normal (fan-out) convs."""
    if isinstance(m, nn.Linear):
        trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, (nn.LayerNorm, nn.modules.batchnorm._BatchNorm)):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
    elif isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
        fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
        nn.init.normal_(m.weight, 0.0, (2.0 / fan_out) ** 0.5)
        if m.bias is not None:
            nn.init.zeros_(m.bias)


def _tokens_to_map(tokens: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(B, h*w, C) row-major tokens -> (B, C, h, w) map, a channels-last view (no copy).

    Unlike ``tokens.transpose(1, 2).reshape(B, C, h, w)`` (whose size-1 batch
    dim gets an odd stride), the result is recognised as channels-last by
    oneDNN convs and ``F.interpolate``, which otherwise take slow generic paths.
    `h`, `w` may be traced 0-d tensors (ONNX export: a reshape keeps them dynamic).
    """
    return tokens.reshape(tokens.shape[0], h, w, tokens.shape[2]).permute(0, 3, 1, 2)


def build_norm(norm, channels: int) -> nn.Module:
    """The one place that builds the adapter's BatchNorm-style layers.

    Args:
        norm (str or callable): "SyncBN" (official), "BN", any detectron2
            norm string ("GN", "FrozenBN", "LN", ...), a callable taking the
            channel count, or ""/None for no norm (identity).
        channels (int): channels to normalise.

    "SyncBN" is decided *when the model is built* (detectron2's ``launch``
    initialises torch.distributed before building):

    * one process (no process group, or world size 1): ``nn.BatchNorm2d``,
      so single-process and CPU training work;
    * several processes on NCCL: ``nn.SyncBatchNorm`` (the release's layer);
    * several processes on another backend (gloo, CPU): detectron2's
      ``NaiveSyncBatchNorm`` (all-reduce based; ``nn.SyncBatchNorm`` refuses
      CPU tensors).

    All three hold the same state-dict keys.
    """
    if norm == "SyncBN":
        if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return nn.BatchNorm2d(channels)
        if dist.get_backend() == "nccl":
            return nn.SyncBatchNorm(channels)
        from detectron2.layers import NaiveSyncBatchNorm

        return NaiveSyncBatchNorm(channels)
    layer = get_norm(norm, channels)
    return nn.Identity() if layer is None else layer


def get_reference_points(spatial_shapes: Sequence[Tuple[int, int]], device=None) -> torch.Tensor:
    """Pixel centres of each level, normalised to [0, 1].

    Args:
        spatial_shapes: [(H_l, W_l), ...].
    Returns:
        (1, sum_l H_l * W_l, 1, 2) tensor of (x, y) = ((j + 0.5) / W_l, (i + 0.5) / H_l),
        levels concatenated, each row-major.
    """
    refs = []
    for h, w in spatial_shapes:
        ys = (torch.arange(h, dtype=torch.float32, device=device) + 0.5) / h
        xs = (torch.arange(w, dtype=torch.float32, device=device) + 0.5) / w
        y, x = torch.meshgrid(ys, xs, indexing="ij")
        refs.append(torch.stack([x.reshape(-1), y.reshape(-1)], -1))
    return torch.cat(refs, 0)[None, :, None, :]


class DeformInputs(NamedTuple):
    """Everything an MSDeformAttn call needs besides query and values."""

    reference_points: torch.Tensor  # (1, Lq, 1, 2)
    spatial_shapes: torch.Tensor  # (n_levels, 2) long, value levels
    level_start_index: torch.Tensor  # (n_levels,) long


def _level_tensors(shapes, device) -> Tuple[torch.Tensor, torch.Tensor]:
    """(n_levels, 2) long level sizes and (n_levels,) start offsets of `shapes`.
    While tracing, the table is stacked from the (traced) sizes, so it follows the input."""
    if torch.jit.is_tracing():
        spatial = torch.stack([torch.stack([torch.as_tensor(h), torch.as_tensor(w)]) for h, w in shapes])
        spatial = spatial.to(device=device, dtype=torch.long)
    else:
        spatial = torch.as_tensor(shapes, dtype=torch.long, device=device)
    sizes = spatial.prod(1)
    start = torch.cat([sizes.new_zeros(1), sizes.cumsum(0)[:-1]])
    return spatial, start


def level_shapes(H: int, W: int) -> List[Tuple[int, int]]:
    """The adapter's 1/8, 1/16, 1/32 map sizes for a (H, W) = 1/16 token grid."""
    return [(2 * H, 2 * W), (H, W), (H // 2, W // 2)]


def deform_inputs(h: int, w: int, device=None) -> Tuple[DeformInputs, DeformInputs]:
    """Reference points and level layouts for an (h, w) image (multiples of 32).

    Returns:
        injector inputs: queries on the 1/16 grid, values at 1/8, 1/16, 1/32;
        extractor inputs: queries at 1/8, 1/16, 1/32, values on the 1/16 grid.
    """
    multi = level_shapes(h // 16, w // 16)
    single = [(h // 16, w // 16)]
    injector = DeformInputs(get_reference_points(single, device), *_level_tensors(multi, device))
    extractor = DeformInputs(get_reference_points(multi, device), *_level_tensors(single, device))
    return injector, extractor


def _conv_bn_relu(cin: int, cout: int, stride: int, norm) -> List[nn.Module]:
    return [
        nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False),
        build_norm(norm, cout),
        nn.ReLU(inplace=True),
    ]


def _map_to_tokens(x: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) map -> (B, h*w, C) row-major tokens, contiguous (a free
    view of a channels-last map)."""
    return x.flatten(2).transpose(1, 2).contiguous()


class SpatialPriorModule(nn.Module):
    """ResNet-like conv stem giving the spatial prior c1..c4 at strides 4, 8, 16, 32.

    Fast branch (``fast_path``, when :func:`~vit_adapter.layers.fast_path.fast_path_ok`):
    each conv followed by a norm that is a fixed affine map (eval BatchNorm)
    runs as one conv with the norm folded in, ``norm(conv(x)) = conv'(x)``
    with ``W' = W * s`` and ``b' = b * s + t`` per output channel. The folded
    weights are computed per call from the current parameters and statistics
    (a few KB), so they never go stale.
    """

    def __init__(self, inplanes: int = 64, embed_dim: int = 384, in_chans: int = 3, norm="SyncBN"):
        """
        Args:
            inplanes (int): stem width C0 (`conv_inplane`, 64); the 1/8, 1/16
                and 1/32 convs have 2*C0, 4*C0, 4*C0 channels.
            embed_dim (int): ViT width D that fc1..fc4 project to.
            in_chans (int): image channels.
            norm: norm after every 3x3 conv, see :func:`build_norm`.
        """
        super().__init__()
        # Sequential indices match the official state dict (stem.0, stem.1, stem.3, ...).
        self.stem = nn.Sequential(
            *_conv_bn_relu(in_chans, inplanes, 2, norm),
            *_conv_bn_relu(inplanes, inplanes, 1, norm),
            *_conv_bn_relu(inplanes, inplanes, 1, norm),
            nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
        )
        self.conv2 = nn.Sequential(*_conv_bn_relu(inplanes, 2 * inplanes, 2, norm))
        self.conv3 = nn.Sequential(*_conv_bn_relu(2 * inplanes, 4 * inplanes, 2, norm))
        self.conv4 = nn.Sequential(*_conv_bn_relu(4 * inplanes, 4 * inplanes, 2, norm))
        self.fc1 = nn.Conv2d(inplanes, embed_dim, kernel_size=1)
        self.fc2 = nn.Conv2d(2 * inplanes, embed_dim, kernel_size=1)
        self.fc3 = nn.Conv2d(4 * inplanes, embed_dim, kernel_size=1)
        self.fc4 = nn.Conv2d(4 * inplanes, embed_dim, kernel_size=1)
        self.fast_path = True

    def forward(self, x: torch.Tensor):
        """
        Args:
            x: (B, 3, H, W) image, H and W multiples of 32.
        Returns:
            c1: (B, D, H/4, W/4) map (channels-last memory); c2, c3, c4:
            (B, h*w, D) tokens of the 1/8, 1/16, 1/32 maps.
        """
        # channels-last: faster convs on CPU (oneDNN) and tensor cores on GPU;
        # the 1x1 projections' outputs are then token sequences already.
        c1 = self._run_stage(self.stem, x.contiguous(memory_format=torch.channels_last))
        c2 = self._run_stage(self.conv2, c1)
        c3 = self._run_stage(self.conv3, c2)
        c4 = self._run_stage(self.conv4, c3)
        return self.fc1(c1), _map_to_tokens(self.fc2(c2)), _map_to_tokens(self.fc3(c3)), _map_to_tokens(self.fc4(c4))

    def _run_stage(self, stage: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
        """``stage(x)``; on the fast branch with fixed-affine norms folded into the convs before them."""
        if not fast_path_ok(self, x):
            return stage(x)
        layers = list(stage)
        i = 0
        while i < len(layers):
            layer = layers[i]
            if isinstance(layer, nn.Conv2d) and i + 1 < len(layers) and is_fixed_affine(layers[i + 1]):
                weight, bias = fold_norm_into_conv(layer, layers[i + 1])
                x = F.conv2d(x, weight, bias, layer.stride, layer.padding, layer.dilation, layer.groups)
                i += 2
            else:
                x = layer(x)
                i += 1
        return x


class DWConv(nn.Module):
    """3x3 depth-wise conv (with bias) applied to each level of a multi-level token sequence."""

    def __init__(self, dim: int):
        """
        Args:
            dim (int): channels.
        """
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)

    def forward(self, x: torch.Tensor, spatial_shapes: Sequence[Tuple[int, int]]) -> torch.Tensor:
        """
        Args:
            x: (B, sum_l h_l * w_l, C) tokens, levels concatenated row-major.
            spatial_shapes: [(h_l, w_l), ...] of the levels, in order.
        Returns:
            (B, sum_l h_l * w_l, C)
        """
        B, _, C = x.shape
        outs, start = [], 0
        for h, w in spatial_shapes:
            level = _tokens_to_map(x[:, start : start + h * w], h, w)
            outs.append(self.dwconv(level).permute(0, 2, 3, 1).reshape(B, h * w, C))
            start += h * w
        return torch.cat(outs, dim=1)


class ConvFFN(nn.Module):
    """Linear -> per-level depth-wise 3x3 conv -> GELU -> Linear."""

    def __init__(
        self,
        in_features: int,
        hidden_features: Optional[int] = None,
        out_features: Optional[int] = None,
        act_layer: Callable[[], nn.Module] = nn.GELU,
        drop: float = 0.0,
    ):
        """
        Args:
            in_features (int): input channels.
            hidden_features (int): hidden channels (D * cffn_ratio in ViT-Adapter).
            out_features (int): output channels (default: in_features).
            act_layer (callable): activation constructor.
            drop (float): dropout after the activation and after fc2.
        """
        super().__init__()
        hidden_features = hidden_features or in_features
        out_features = out_features or in_features
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.dwconv = DWConv(hidden_features)
        self.act = act_layer()
        self.fc2 = nn.Linear(hidden_features, out_features)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor, spatial_shapes: Sequence[Tuple[int, int]]) -> torch.Tensor:
        """x: (B, sum h_l*w_l, C_in) -> (B, sum h_l*w_l, C_out)."""
        return self.drop(self.fc2(self.drop(self.act(self.dwconv(self.fc1(x), spatial_shapes)))))

@contextlib.contextmanager
def _keep_running_stats(modules: Sequence[nn.Module]):
    """Restore every BatchNorm buffer of `module` (running mean / var, batch
    count) on exit: a checkpoint's recomputation then normalises with the
    same batch statistics as the first pass but does not update the running
    statistics a second time (any BN flavour, synced or not)."""
    bns = [m for mod in modules for m in mod.modules() if isinstance(m, nn.modules.batchnorm._NormBase)]
    saved = [[b.clone() for b in m.buffers()] for m in bns]
    try:
        yield
    finally:
        with torch.no_grad():
            for m, bufs in zip(bns, saved):
                for b, s in zip(m.buffers(), bufs):
                    b.copy_(s)


def checkpoint_with_norms(modules: Sequence[nn.Module], fn: Callable, *args):
    """``torch.utils.checkpoint`` of ``fn(*args)`` whose BatchNorm layers (in
    `modules`) update their running statistics exactly once: outputs, gradients
    and running statistics equal the non-checkpointed call."""
    return cp.checkpoint(
        fn, *args, use_reentrant=False,
        context_fn=lambda: (contextlib.nullcontext(), _keep_running_stats(modules)),
    )


def _maybe_checkpoint(fn, with_cp: bool, query: torch.Tensor, feat: torch.Tensor) -> torch.Tensor:
    if with_cp and query.requires_grad:
        return cp.checkpoint(fn, query, feat, use_reentrant=False)
    return fn(query, feat)


class _NormedDeformAttention(nn.Module):
    """What the injector and the extractor share: ``MSDeformAttn(LN(query), LN(feat))``.

    Owns ``query_norm``, ``feat_norm`` and ``attn`` (the official names).
    `reorder`: the projection the deformable attention moves across the
    sampling without autograd (see :class:`~vit_adapter.layers.ms_deform_attn.MSDeformAttn`).
    """

    def __init__(self, dim, num_heads, n_points, n_levels, deform_ratio, norm_layer, with_cp, reorder=None):
        super().__init__()
        self.with_cp = with_cp
        self.query_norm = norm_layer(dim)
        self.feat_norm = norm_layer(dim)
        self.attn = MSDeformAttn(
            d_model=dim, n_levels=n_levels, n_heads=num_heads, n_points=n_points, ratio=deform_ratio,
            reorder=reorder,
        )

    def attend(self, query: torch.Tensor, feat: torch.Tensor, inputs: DeformInputs) -> torch.Tensor:
        """(B, Lq, D) queries attend to (B, S, D) values laid out as `inputs` -> (B, Lq, D)."""
        return self.attn(
            self.query_norm(query),
            inputs.reference_points,
            self.feat_norm(feat),
            inputs.spatial_shapes,
            inputs.level_start_index,
            None,
        )


class Injector(_NormedDeformAttention):
    """Spatial feature injector: ViT tokens query the spatial prior.

    ``x = x + gamma * MSDeformAttn(LN(x), LN(c))``; with gamma = 0 at init the
    injector is the identity, so the ViT starts from its pre-trained behaviour.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 6,
        n_points: int = 4,
        n_levels: int = 3,
        deform_ratio: float = 1.0,
        norm_layer: Callable[[int], nn.Module] = partial(nn.LayerNorm, eps=1e-6),
        init_values: float = 0.0,
        with_cp: bool = False,
    ):
        """
        Args:
            dim (int): token width D.
            num_heads (int): deformable-attention heads.
            n_points (int): sampling points per head and level.
            n_levels (int): value levels (3: 1/8, 1/16, 1/32).
            deform_ratio (float): value width ratio of MSDeformAttn.
            norm_layer (callable): token norm constructor (LayerNorm eps 1e-6).
            init_values (float): initial value of the per-channel `gamma`.
            with_cp (bool): activation checkpointing while gradients are needed.
        """
        # few queries (the 1/16 grid) next to the values (1/8 + 1/16 + 1/32): sample, then value_proj
        super().__init__(dim, num_heads, n_points, n_levels, deform_ratio, norm_layer, with_cp,
                         reorder="value_proj_last")
        self.gamma = nn.Parameter(torch.full((dim,), float(init_values)))

    def forward(self, query: torch.Tensor, feat: torch.Tensor, inputs: DeformInputs) -> torch.Tensor:
        """
        Args:
            query: (B, Lq, D) ViT tokens.
            feat: (B, S, D) multi-scale adapter tokens.
            inputs: reference points / level layout of `feat`.
        Returns:
            (B, Lq, D)
        """

        def _inner(query, feat):
            return query + self.gamma * self.attend(query, feat, inputs)

        return _maybe_checkpoint(_inner, self.with_cp, query, feat)


class Extractor(_NormedDeformAttention):
    """Multi-scale feature extractor: adapter tokens query the ViT tokens.

    ``c = c + MSDeformAttn(LN(c), LN(x))``, then (with_cffn)
    ``c = c + DropPath(ConvFFN(LN(c)))``.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 6,
        n_points: int = 4,
        n_levels: int = 1,
        deform_ratio: float = 1.0,
        with_cffn: bool = True,
        cffn_ratio: float = 0.25,
        drop: float = 0.0,
        drop_path: float = 0.0,
        norm_layer: Callable[[int], nn.Module] = partial(nn.LayerNorm, eps=1e-6),
        with_cp: bool = False,
    ):
        """
        Args:
            dim (int): token width D.
            num_heads (int): deformable-attention heads.
            n_points (int): sampling points per head and level.
            n_levels (int): value levels (1: the ViT's 1/16 grid).
            deform_ratio (float): value width ratio of MSDeformAttn.
            with_cffn (bool): add the ConvFFN branch.
            cffn_ratio (float): ConvFFN hidden width / D.
            drop (float): ConvFFN dropout.
            drop_path (float): stochastic depth on the ConvFFN branch (the
                official backbone passes its full drop_path_rate).
            norm_layer (callable): token norm constructor (LayerNorm eps 1e-6).
            with_cp (bool): activation checkpointing while gradients are needed.
        """
        # many queries (1/8 + 1/16 + 1/32) next to the values (the 1/16 grid): output_proj, then sample
        super().__init__(dim, num_heads, n_points, n_levels, deform_ratio, norm_layer, with_cp,
                         reorder="output_proj_first")
        self.with_cffn = with_cffn
        if with_cffn:
            self.ffn = ConvFFN(dim, int(dim * cffn_ratio), drop=drop)
            self.ffn_norm = norm_layer(dim)
            self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def forward(
        self,
        query: torch.Tensor,
        feat: torch.Tensor,
        inputs: DeformInputs,
        query_shapes: Sequence[Tuple[int, int]],
    ) -> torch.Tensor:
        """
        Args:
            query: (B, S, D) multi-scale adapter tokens.
            feat: (B, Lv, D) ViT tokens.
            inputs: reference points of `query`, level layout of `feat`.
            query_shapes: [(h_l, w_l), ...] of the query levels (for the ConvFFN).
        Returns:
            (B, S, D)
        """

        def _inner(query, feat):
            query = query + self.attend(query, feat, inputs)
            if self.with_cffn:
                query = query + self.drop_path(self.ffn(self.ffn_norm(query), query_shapes))
            return query

        return _maybe_checkpoint(_inner, self.with_cp, query, feat)


class InteractionBlock(nn.Module):
    """Injector -> a range of ViT blocks -> extractor (-> 2 extra extractors on the last one)."""

    def __init__(
        self,
        dim: int,
        num_heads: int = 6,
        n_points: int = 4,
        norm_layer: Callable[[int], nn.Module] = partial(nn.LayerNorm, eps=1e-6),
        drop: float = 0.0,
        drop_path: float = 0.0,
        with_cffn: bool = True,
        cffn_ratio: float = 0.25,
        init_values: float = 0.0,
        deform_ratio: float = 1.0,
        extra_extractor: bool = False,
        with_cp: bool = False,
    ):
        """
        Args:
            dim (int): token width D.
            num_heads (int): deformable-attention heads (`deform_num_heads`).
            n_points (int): sampling points per head and level.
            norm_layer (callable): token norm constructor.
            drop (float): ConvFFN dropout.
            drop_path (float): extractor ConvFFN stochastic depth.
            with_cffn (bool): extractors have a ConvFFN.
            cffn_ratio (float): ConvFFN hidden width / D.
            init_values (float): injector gamma init.
            deform_ratio (float): value width ratio of MSDeformAttn.
            extra_extractor (bool): add `extra_extractors` (2 more extractors).
            with_cp (bool): checkpoint the injector / extractors.
        """
        super().__init__()
        common = dict(
            dim=dim, num_heads=num_heads, n_points=n_points, deform_ratio=deform_ratio,
            norm_layer=norm_layer, with_cp=with_cp,
        )
        extractor_args = dict(
            common, n_levels=1, with_cffn=with_cffn, cffn_ratio=cffn_ratio, drop=drop, drop_path=drop_path
        )
        self.injector = Injector(n_levels=3, init_values=init_values, **common)
        self.extractor = Extractor(**extractor_args)
        if extra_extractor:
            self.extra_extractors = nn.Sequential(*[Extractor(**extractor_args) for _ in range(2)])
        else:
            self.extra_extractors = None

    def forward(
        self,
        x: torch.Tensor,
        c: torch.Tensor,
        blocks: Sequence[nn.Module],
        injector_inputs: DeformInputs,
        extractor_inputs: DeformInputs,
        H: int,
        W: int,
    ):
        """
        Args:
            x: (B, H*W, D) ViT tokens on the (H, W) = 1/16 grid.
            c: (B, 4HW + HW + HW/4, D) adapter tokens (1/8, 1/16, 1/32).
            blocks: the ViT blocks this interaction covers, called as blk(x, H, W).
            injector_inputs, extractor_inputs: from :func:`deform_inputs`.
        Returns:
            (x, c), same shapes.
        """
        x = self.injector(x, c, injector_inputs)
        for blk in blocks:
            x = blk(x, H, W)
        query_shapes = level_shapes(H, W)
        c = self.extractor(c, x, extractor_inputs, query_shapes)
        if self.extra_extractors is not None:
            for extractor in self.extra_extractors:
                c = extractor(c, x, extractor_inputs, query_shapes)
        return x, c
