"""Mask R-CNN, BEiT-Adapter-L (BEiT-L / BEiTv2-L init), 3x + MS. Ours: the release
has no Mask R-CNN BEiT-Adapter row (its BEiT-L detector is HTC++, 401M params:
BEiT-L 3x+MS 58.4 box / 50.8 mask AP on val2017, BEiTv2-L 58.8 / 51.1; test-dev
with TTA, BEiTv2-L 60.9 / 53.0); no COCO result of this config.

Backbone as the release's HTC++ BEiT-L configs (configs/common/models/mask_rcnn_beit_adapter.py);
optimizer as those configs: AdamW lr 1e-4, wd 0.05, layer-wise lr decay 0.9
over the 24 blocks; schedule and data as configs/COCO/mask_rcnn_vit_adapter_s_3x_ms.py.
Parameters (80 classes, ours, printed by tests/modeling/test_beit_param_counts.py): see docs/beit.md.

train.init_checkpoint (a path you fill; unilm or timm layout, tables resized on load):
    https://conversationhub.blob.core.windows.net/beit-share-public/beit/beit_large_patch16_224_pt22k_ft22k.pth
"""
from ..common.data_coco_ms import dataloader
from ..common.models.mask_rcnn_beit_adapter import model
from ..common.schedules import lr_multiplier_3x as lr_multiplier, max_iter_3x
from .mask_rcnn_vit_adapter_s_1x import optimizer, train

optimizer.params.layer_decay_rate = 0.9
optimizer.params.num_layers = 24
train.max_iter = max_iter_3x  # 266148
train.init_checkpoint = "checkpoints/beit_large_patch16_224_pt22k_ft22k.pth"
train.output_dir = "output/mask_rcnn_beit_adapter_l_3x_ms"
