"""UperNet, BEiT-Adapter-L (BEiT-L init, ImageNet-22k), ADE20K, crop 640, 160k iterations.

Release row: UperNet ViT-Adapter-L, BEiT-L, 640, 160k: mIoU 58.0 (ss) / 58.4 (ms),
451M params (451.9M counted from the release's code).
Release config: segmentation/configs/ade20k/upernet_beit_adapter_large_640_160k_ade20k_ss.py

- backbone: BEiTAdapter, segmentation variant (vit_adapter.modeling.beit_adapter:
  a cls token through the BEiT blocks, global attention, relative position
  tables over the 640 px grid, output i = the ViT map after interaction i),
  BEiT-L (1024 wide, 24 blocks, layer scale 1e-6, q/v bias), drop path 0.3,
  16 deformable heads, deform_ratio 0.5, activation checkpointing;
- UPerHead 1024 channels (the release: channels=1024), FCN auxiliary head 256;
- test: slide 640 / 426; data: resize (2048, 640) ratio 0.5-2.0, crop 640
  (configs/common/data_ade20k.py at 640), test short side 640;
- AdamW lr 2e-5, weight decay 0.05, layer decay 0.90 over 24 blocks; schedule as
  configs/ADE20K/upernet_vit_adapter_s_512_160k.py.

train.init_checkpoint (a path you fill):
    https://conversationhub.blob.core.windows.net/beit-share-public/beit/beit_large_patch16_224_pt22k_ft22k.pth
"""
from detectron2.config import LazyCall as L

from vit_adapter.modeling.beit_adapter import BEiTAdapter

from ..common.data_ade20k import ade20k_test_augmentations, ade20k_train_augmentations
from .upernet_vit_adapter_s_512_160k import dataloader, lr_multiplier, model, optimizer, train

model.backbone = L(BEiTAdapter)(
    img_size=640, pretrain_size=224, patch_size=16, embed_dim=1024, depth=24, num_heads=16, mlp_ratio=4,
    qkv_bias=True, use_abs_pos_emb=False, use_rel_pos_bias=True, init_values=1e-6, drop_path_rate=0.3,
    window_attn=False, with_cls_token=True,
    conv_inplane=64, n_points=4, deform_num_heads=16, cffn_ratio=0.25, deform_ratio=0.5,
    interaction_indexes=[[0, 5], [6, 11], [12, 17], [18, 23]],
    with_cp=True, norm="SyncBN",
)
model.sem_seg_head.channels = 1024
model.crop_size = (640, 640)
model.stride = (426, 426)
dataloader.train.mapper.augmentations = ade20k_train_augmentations(640)
dataloader.test.mapper.augmentations = ade20k_test_augmentations(640)
optimizer.lr = 2e-5
optimizer.weight_decay = 0.05
optimizer.params.layer_decay_rate = 0.90
optimizer.params.num_layers = 24
train.init_checkpoint = "checkpoints/beit_large_patch16_224_pt22k_ft22k.pth"
train.output_dir = "output/upernet_beit_adapter_l_640_160k"
