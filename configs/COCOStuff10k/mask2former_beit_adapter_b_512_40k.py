"""Mask2Former, BEiT-Adapter-B (BEiT-B init), COCO-Stuff-10k, crop 512, 40k iterations.

Release row (segmentation/README.md): Mask2Former ViT-Adapter-B, BEiT-B, 40k, 512:
mIoU 50.0 (ss) / 50.5 (ms), 120M params (120.3M counted here, 171 classes).
Release config: segmentation/configs/coco_stuff10k/mask2former_beit_adapter_base_512_40k_cocostuff10k_ss.py

    python train_net.py --config-file configs/COCOStuff10k/mask2former_beit_adapter_b_512_40k.py --num-gpus 8

Differences from the L row (configs/COCOStuff10k/mask2former_beit_adapter_l_512_40k.py):

| part | setting |
| --- | --- |
| backbone | BEiT-Adapter-B: 768 wide, 12 blocks, 12 heads, 12 deform heads, drop path 0.2, interactions [0-2, 3-5, 6-8, 9-11] |
| head | width 256, 8 heads, pixel-decoder FFN 1024, decoder FFN 2048 (the release's base Mask2Former head) |
| optimizer | AdamW lr 3e-5, layer decay 0.95 over 12 blocks |

train.init_checkpoint (a path you fill):
    https://conversationhub.blob.core.windows.net/beit-share-public/beit/beit_base_patch16_224_pt22k_ft22k.pth
"""
# leading underscores: LazyConfig would export the preset dicts as config keys
from ..common.models.mask2former_beit_adapter import BEIT_ADAPTER_B as _BEIT_ADAPTER_B
from ..common.models.mask2former_beit_adapter import MASK2FORMER_B_HEAD as _B_HEAD
from ..common.models.mask2former_beit_adapter import set_head_size
from .mask2former_beit_adapter_l_512_40k import dataloader, lr_multiplier, model, optimizer, train

model.backbone.update(_BEIT_ADAPTER_B)
set_head_size(model.sem_seg_head, in_channels=768, **_B_HEAD)
optimizer.lr = 3e-5
optimizer.params.layer_decay_rate = 0.95
optimizer.params.num_layers = 12
train.init_checkpoint = "checkpoints/beit_base_patch16_224_pt22k_ft22k.pth"
train.output_dir = "output/mask2former_beit_adapter_b_512_40k_cocostuff10k"
