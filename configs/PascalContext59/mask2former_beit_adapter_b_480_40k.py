"""Mask2Former, BEiT-Adapter-B (BEiT-B init), Pascal Context-59, crop 480, 40k iterations.

Release row (segmentation/README.md): Mask2Former ViT-Adapter-B, BEiT-B, 40k, 480:
mIoU 64.0 (ss) / 64.4 (ms), 120M params (120.2M counted here, 59 classes).
Release config: segmentation/configs/pascal_context/mask2former_beit_adapter_base_480_40k_pascal_context_59_ss.py

Differences from the L row (configs/PascalContext59/mask2former_beit_adapter_l_480_40k.py):
BEiT-Adapter-B backbone, the base head (width 256, 8 heads, FFN 1024 / 2048),
AdamW lr 3e-5, layer decay 0.95 over 12 blocks (as configs/COCOStuff10k/mask2former_beit_adapter_b_512_40k.py).

train.init_checkpoint (a path you fill):
    https://conversationhub.blob.core.windows.net/beit-share-public/beit/beit_base_patch16_224_pt22k_ft22k.pth
"""
# leading underscores: LazyConfig would export the preset dicts as config keys
from ..common.models.mask2former_beit_adapter import BEIT_ADAPTER_B as _BEIT_ADAPTER_B
from ..common.models.mask2former_beit_adapter import MASK2FORMER_B_HEAD as _B_HEAD
from ..common.models.mask2former_beit_adapter import set_head_size
from .mask2former_beit_adapter_l_480_40k import dataloader, lr_multiplier, model, optimizer, train

model.backbone.update(_BEIT_ADAPTER_B)
set_head_size(model.sem_seg_head, in_channels=768, **_B_HEAD)
optimizer.lr = 3e-5
optimizer.params.layer_decay_rate = 0.95
optimizer.params.num_layers = 12
train.init_checkpoint = "checkpoints/beit_base_patch16_224_pt22k_ft22k.pth"
train.output_dir = "output/mask2former_beit_adapter_b_480_40k_pascal_context59"
