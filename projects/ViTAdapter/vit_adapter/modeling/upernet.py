"""UperNet (Xiao et al., ECCV 2018) as a detectron2 semantic-segmentation head.

Structured as the release's mmsegmentation 0.20.2 heads (``UPerHead`` +
``FCNHead`` in ``segmentation/configs/_base_/models/upernet_r50.py``), with
their module names, so a release checkpoint converts by prefix
(``decode_head.*`` -> ``sem_seg_head.decode_head.*``, ``auxiliary_head.*`` ->
``sem_seg_head.auxiliary_head.*``; :mod:`vit_adapter.checkpoint.official`):

- :class:`ConvNormAct`: conv (no bias when normalised) + norm + ReLU, children
  ``conv`` / ``bn`` / ``activate`` (mmcv ``ConvModule``);
- :class:`PyramidPooling`: the PPM on the coarsest map (one branch per pool
  scale: adaptive average pool -> 1x1 ConvNormAct -> bilinear upsampling);
- :class:`UPerHead`: PPM + 3x3 ``bottleneck`` on the last level, 1x1
  ``lateral_convs`` on the others, top-down bilinear adds, 3x3 ``fpn_convs``,
  concatenation of all levels at the finest stride, 3x3 ``fpn_bottleneck``,
  ``dropout`` (channel dropout, p 0.1), 1x1 ``conv_seg``;
- :class:`FCNHead`: the auxiliary head, ``convs`` (3x3 ConvNormAct) ->
  dropout -> ``conv_seg``;
- :class:`UperNetHead`: the ``sem_seg_head`` of detectron2's
  ``SemanticSegmentor``: both heads, their losses in training (auxiliary
  weight 0.4), the decode head's logits at the input size in inference.

Upsampling is bilinear with ``align_corners=False`` everywhere (the release's
``align_corners=False``).
"""
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from detectron2.layers import ShapeSpec
from torch import nn

from vit_adapter.compat import get_norm

__all__ = ["AdaptiveAvgPool", "ConvNormAct", "PyramidPooling", "UPerHead", "FCNHead", "UperNetHead", "semantic_cross_entropy"]


def _resize(x: torch.Tensor, size) -> torch.Tensor:
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


class ConvNormAct(nn.Module):
    """Conv2d -> norm -> ReLU, mmcv ``ConvModule``'s layout and names.

    Args:
        in_channels (int), out_channels (int), kernel_size (int): the conv's.
        padding (int): the conv's padding (``kernel_size // 2`` keeps the size).
        norm (str): detectron2 norm name ("SyncBN", "BN", "GN", ...) or "" for
            none; the conv has a bias only without a norm (mmcv's rule).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, padding: int = 0, norm: str = "SyncBN"):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, bias=not norm)
        self.bn = get_norm(norm, out_channels) if norm else nn.Identity()
        self.activate = nn.ReLU(inplace=True)
        # mmcv ConvModule.init_weights: kaiming normal (fan_out, relu) for the conv, norm 1 / 0.
        nn.init.kaiming_normal_(self.conv.weight, mode="fan_out", nonlinearity="relu")
        if self.conv.bias is not None:
            nn.init.zeros_(self.conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activate(self.bn(self.conv(x)))


def _pooling_matrix(n_in, n_out: int, like: torch.Tensor) -> torch.Tensor:
    """(n_out, n_in) averaging weights of adaptive average pooling along one axis (bin i:
    [floor(i n_in / n_out), ceil((i + 1) n_in / n_out))), from tensor ops only, so that
    `n_in` may be a traced size."""
    idx = torch.arange(n_in, device=like.device)
    i = torch.arange(n_out, device=like.device)[:, None]
    start = torch.div(i * n_in, n_out, rounding_mode="floor")
    end = torch.div((i + 1) * n_in + n_out - 1, n_out, rounding_mode="floor")
    inside = ((idx[None] >= start) & (idx[None] < end)).to(like.dtype)
    return inside / inside.sum(dim=1, keepdim=True)


class AdaptiveAvgPool(nn.Module):
    """``nn.AdaptiveAvgPool2d(output_size)``; while tracing (ONNX export), the same
    bins as two averaging matrices, since ONNX has no adaptive pooling for inputs of a
    dynamic size (tests/modeling/test_upernet.py checks that both agree)."""

    def __init__(self, output_size: int):
        super().__init__()
        self.output_size = int(output_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.jit.is_tracing():
            return F.adaptive_avg_pool2d(x, self.output_size)
        ph = _pooling_matrix(x.shape[-2], self.output_size, x)
        pw = _pooling_matrix(x.shape[-1], self.output_size, x)
        return torch.einsum("ih,nchw,jw->ncij", ph, x, pw)


class PoolingBranch(nn.Sequential):
    """One PPM branch: adaptive average pool to ``scale`` x ``scale``, then a 1x1
    ConvNormAct (children ``0`` and ``1``, mmseg's ``nn.Sequential``)."""

    def __init__(self, scale: int, in_channels: int, channels: int, norm: str):
        super().__init__(AdaptiveAvgPool(scale), ConvNormAct(in_channels, channels, 1, norm=norm))


class PyramidPooling(nn.ModuleList):
    """Pyramid pooling module (PSPNet): one :class:`PoolingBranch` per pool scale.

    ``forward`` maps a (N, C, h, w) map to the (N, C + len(scales) * channels,
    h, w) concatenation of the input and every branch upsampled to (h, w).
    """

    def __init__(self, pool_scales: Sequence[int], in_channels: int, channels: int, norm: str):
        super().__init__([PoolingBranch(s, in_channels, channels, norm) for s in pool_scales])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x] + [_resize(branch(x), x.shape[-2:]) for branch in self], dim=1)


class UPerHead(nn.Module):
    """UperNet's decode head: PPM on the coarsest level + FPN + fusion.

    ``forward`` takes the list of L maps, finest first, (N, in_channels[i],
    h_i, w_i), and returns (N, num_classes, h_0, w_0) logits at the finest
    map's size.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        channels: int,
        num_classes: int,
        pool_scales: Sequence[int] = (1, 2, 3, 6),
        dropout: float = 0.1,
        norm: str = "SyncBN",
    ):
        """
        Args:
            in_channels (list[int]): channels of each input level, finest first.
            channels (int): width of the head (512 in the release).
            num_classes (int): output classes.
            pool_scales (list[int]): PPM output sizes on the coarsest level.
            dropout (float): channel-dropout probability before ``conv_seg``.
            norm (str): norm of every ConvNormAct.
        """
        super().__init__()
        in_channels = list(in_channels)
        if len(in_channels) < 2:
            raise ValueError(f"UPerHead needs at least 2 input levels, got in_channels={in_channels}")
        self.psp_modules = PyramidPooling(pool_scales, in_channels[-1], channels, norm)
        self.bottleneck = ConvNormAct(in_channels[-1] + len(pool_scales) * channels, channels, 3, 1, norm)
        self.lateral_convs = nn.ModuleList([ConvNormAct(c, channels, 1, 0, norm) for c in in_channels[:-1]])
        self.fpn_convs = nn.ModuleList([ConvNormAct(channels, channels, 3, 1, norm) for _ in in_channels[:-1]])
        self.fpn_bottleneck = ConvNormAct(len(in_channels) * channels, channels, 3, 1, norm)
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.conv_seg = nn.Conv2d(channels, num_classes, 1)
        nn.init.normal_(self.conv_seg.weight, 0.0, 0.01)  # mmseg BaseDecodeHead.init_weights
        nn.init.zeros_(self.conv_seg.bias)

    def forward(self, inputs: List[torch.Tensor]) -> torch.Tensor:
        laterals = [conv(x) for conv, x in zip(self.lateral_convs, inputs[:-1])]
        laterals.append(self.bottleneck(self.psp_modules(inputs[-1])))
        for i in range(len(laterals) - 1, 0, -1):  # top-down: coarse into fine
            laterals[i - 1] = laterals[i - 1] + _resize(laterals[i], laterals[i - 1].shape[-2:])
        outs = [conv(x) for conv, x in zip(self.fpn_convs, laterals[:-1])] + [laterals[-1]]
        size = outs[0].shape[-2:]
        fused = self.fpn_bottleneck(torch.cat([outs[0]] + [_resize(x, size) for x in outs[1:]], dim=1))
        return self.conv_seg(self.dropout(fused))


class FCNHead(nn.Module):
    """The FCN auxiliary head: ``num_convs`` ConvNormAct -> dropout -> 1x1 ``conv_seg``.

    (N, in_channels, h, w) -> (N, num_classes, h, w) logits.
    """

    def __init__(
        self,
        in_channels: int,
        channels: int,
        num_classes: int,
        num_convs: int = 1,
        kernel_size: int = 3,
        dropout: float = 0.1,
        norm: str = "SyncBN",
    ):
        """
        Args:
            in_channels (int): input channels.
            channels (int): width of the convs (256 in the release).
            num_classes (int): output classes.
            num_convs (int): ConvNormAct layers (the release: 1).
            kernel_size (int): their kernel size.
            dropout (float): channel-dropout probability before ``conv_seg``.
            norm (str): norm of every ConvNormAct.
        """
        super().__init__()
        if num_convs < 1:
            raise ValueError(f"FCNHead needs num_convs >= 1, got {num_convs}")
        widths = [in_channels] + [channels] * num_convs
        self.convs = nn.Sequential(
            *[ConvNormAct(widths[i], channels, kernel_size, kernel_size // 2, norm) for i in range(num_convs)]
        )
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.conv_seg = nn.Conv2d(channels, num_classes, 1)
        nn.init.normal_(self.conv_seg.weight, 0.0, 0.01)
        nn.init.zeros_(self.conv_seg.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_seg(self.dropout(self.convs(x)))


def semantic_cross_entropy(
    logits: torch.Tensor, targets: torch.Tensor, ignore_value: int, avg_non_ignore: bool = False
) -> torch.Tensor:
    """Per-pixel cross-entropy of (N, C, h, w) logits against (N, H, W) labels.

    The logits are upsampled bilinearly to the labels' size first (the
    release's and detectron2's rule). ``avg_non_ignore=False`` divides the
    summed loss by every pixel, ignored ones included (mmseg 0.20.2, the
    release's version); True divides by the labelled pixels only (detectron2's
    ``SemSegFPNHead``). A batch without labelled pixels gives 0 either way.
    """
    logits = _resize(logits, targets.shape[-2:])
    loss = F.cross_entropy(logits, targets, reduction="sum", ignore_index=ignore_value)
    if avg_non_ignore:
        return loss / (targets != ignore_value).sum().clamp(min=1)
    return loss / targets.numel()


class UperNetHead(nn.Module):
    """The ``sem_seg_head`` of a detectron2 ``SemanticSegmentor``: UperNet + FCN auxiliary head.

    detectron2's head contract (as ``SemSegFPNHead``):
    ``forward(features, targets=None) -> (logits, losses)``.

    - training: ``(None, {"loss_sem_seg": ..., "loss_sem_seg_aux": ...})``;
      ``targets`` is the (N, H, W) long label map at the padded input size,
      ``ignore_value`` where unlabelled;
    - inference: ``((N, num_classes, H, W) logits, {})`` at the padded input
      size (the decode head's stride-``common_stride`` logits upsampled
      bilinearly); the auxiliary head does not run.
    """

    def __init__(
        self,
        input_shape: Dict[str, ShapeSpec],
        num_classes: int,
        in_features: Sequence[str] = ("res2", "res3", "res4", "res5"),
        channels: int = 512,
        pool_scales: Sequence[int] = (1, 2, 3, 6),
        dropout: float = 0.1,
        norm: str = "SyncBN",
        aux_in_feature: Optional[str] = "res4",
        aux_channels: int = 256,
        aux_num_convs: int = 1,
        aux_loss_weight: float = 0.4,
        loss_weight: float = 1.0,
        ignore_value: int = 255,
        avg_non_ignore: bool = False,
    ):
        """
        Args:
            input_shape (dict[str, ShapeSpec]): the backbone's ``output_shape()``.
            num_classes (int): classes (ADE20K: 150).
            in_features (list[str]): decode-head inputs, finest first (the
                release: the 4 adapter maps at strides 4, 8, 16, 32).
            channels (int): decode-head width (512).
            pool_scales (list[int]): PPM scales (1, 2, 3, 6).
            dropout (float): channel dropout before both classifiers (0.1).
            norm (str): norm of every ConvNormAct ("SyncBN", the release's).
            aux_in_feature (str or None): input of the FCN auxiliary head (the
                release: the 1/16 map, "res4"); None: no auxiliary head.
            aux_channels (int), aux_num_convs (int): FCN head width (256) and convs (1).
            aux_loss_weight (float): weight of the auxiliary loss (0.4).
            loss_weight (float): weight of the decode head's loss (1.0).
            ignore_value (int): label of unlabelled pixels (255).
            avg_non_ignore (bool): see :func:`semantic_cross_entropy`.
        """
        super().__init__()
        in_features = list(in_features)
        missing = [f for f in in_features + ([aux_in_feature] if aux_in_feature else []) if f not in input_shape]
        if missing:
            raise ValueError(f"UperNetHead inputs {missing} are not backbone outputs {sorted(input_shape)}")
        strides = [input_shape[f].stride for f in in_features]
        if strides != sorted(strides):
            raise ValueError(f"UperNetHead in_features must be finest first, got strides {strides}")
        self.in_features = in_features
        self.aux_in_feature = aux_in_feature
        self.common_stride = strides[0]
        self.num_classes = num_classes
        self.ignore_value = ignore_value
        self.loss_weight = loss_weight
        self.aux_loss_weight = aux_loss_weight
        self.avg_non_ignore = avg_non_ignore
        self.decode_head = UPerHead(
            [input_shape[f].channels for f in in_features], channels, num_classes, pool_scales, dropout, norm
        )
        self.auxiliary_head = (
            FCNHead(input_shape[aux_in_feature].channels, aux_channels, num_classes, aux_num_convs, 3, dropout, norm)
            if aux_in_feature
            else None
        )

    def forward(self, features: Dict[str, torch.Tensor], targets: Optional[torch.Tensor] = None):
        """
        Args:
            features: backbone maps by name, (N, C, H/s, W/s).
            targets: (N, H, W) long labels (training only).
        Returns:
            (logits or None, losses): see the class docstring.
        """
        logits = self.decode_head([features[f] for f in self.in_features])
        if self.training:
            if targets is None:
                raise ValueError("UperNetHead needs targets in training mode")
            losses = {"loss_sem_seg": self.loss_weight * self._loss(logits, targets)}
            if self.auxiliary_head is not None:
                aux = self.auxiliary_head(features[self.aux_in_feature])
                losses["loss_sem_seg_aux"] = self.aux_loss_weight * self._loss(aux, targets)
            return None, losses
        h, w = logits.shape[-2:]
        return _resize(logits, (h * self.common_stride, w * self.common_stride)), {}

    def _loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return semantic_cross_entropy(logits.float(), targets, self.ignore_value, self.avg_non_ignore)
