"""Mask2Former (Cheng et al., CVPR 2022) for semantic segmentation, as a
detectron2 ``sem_seg_head``: an MSDeformAttn pixel decoder, a masked-attention
transformer decoder, Hungarian matching and point-sampled losses. Parameter
layout of the official ViT-Adapter release's ``mmseg_custom`` head (mmdet
2.22), so its checkpoints convert by a key table
(:mod:`vit_adapter.checkpoint.official`). No compiled operator."""
from .criterion import SetCriterion, dice_loss, sigmoid_bce_loss
from .head import Mask2FormerHead, semantic_inference, semantic_to_instances
from .matcher import HungarianMatcher, batch_dice_cost, batch_sigmoid_bce_cost
from .pixel_decoder import DeformableEncoderLayer, MSDeformAttnPixelDecoder
from .position_encoding import SinePositionalEncoding
from .transformer_decoder import MaskedAttentionDecoder, MaskedAttentionDecoderLayer

__all__ = [
    "DeformableEncoderLayer",
    "HungarianMatcher",
    "Mask2FormerHead",
    "MaskedAttentionDecoder",
    "MaskedAttentionDecoderLayer",
    "MSDeformAttnPixelDecoder",
    "SetCriterion",
    "SinePositionalEncoding",
    "batch_dice_cost",
    "batch_sigmoid_bce_cost",
    "dice_loss",
    "semantic_inference",
    "semantic_to_instances",
    "sigmoid_bce_loss",
]
