"""Mask2Former, BEiT-Adapter-L, ADE20K, crop 896, 80k iterations, from the COCO-Stuff-164k model.

Release row (segmentation/README.md): Mask2Former ViT-Adapter-L, BEiT-L + COCO-Stuff, 80k, 896:
mIoU 59.4 (ss) / 60.5 (ms), 571M params (570.7M counted here).
Release config: segmentation/configs/ade20k/mask2former_beit_adapter_large_896_80k_ade20k_ss.py

    python train_net.py --config-file configs/ADE20K/mask2former_beit_adapter_l_896_80k.py --num-gpus 8

Differences from the 640 row (configs/ADE20K/mask2former_beit_adapter_l_640_160k.py):

| part | setting |
| --- | --- |
| backbone | img_size 896 (relative position tables over the 56 x 56 grid) |
| queries | 200 |
| test | slide 896, stride 512; short side 896, long side <= 3584 |
| data | ratio-range resize of (3584, 896), crop 896; 8 images / iter (8 GPUs x 1) |
| schedule | 80k iters |
| init | the release's COCO-Stuff-164k Mask2Former (its `load_from`), converted |

train.init_checkpoint (a path you fill; convert the release checkpoint first):
    https://github.com/czczup/ViT-Adapter/releases/download/v0.2.6/mask2former_beit_adapter_large_896_80k_cocostuff164k.zip
    python tools/convert_official_checkpoint.py --config configs/COCOStuff164k/mask2former_beit_adapter_l_896_80k.py ...
"""
from .mask2former_beit_adapter_l_640_160k import lr_multiplier, model, optimizer, train
from ..common.data_sem_seg import sem_seg_data

CROP = 896
MAX_ITER = 80000
model.backbone.img_size = CROP
model.sem_seg_head.predictor.num_queries = 200
model.crop_size = (CROP, CROP)
model.stride = (512, 512)
dataloader = sem_seg_data("ade20k_sem_seg_train", "ade20k_sem_seg_val", 150, CROP, (4 * CROP, CROP), (4 * CROP, CROP),
                          batch_size=8)

lr_multiplier.warmup_length = 1500 / MAX_ITER
train.max_iter = MAX_ITER
train.init_checkpoint = "checkpoints/mask2former_beit_adapter_large_896_80k_cocostuff164k_d2.pth"
train.output_dir = "output/mask2former_beit_adapter_l_896_80k"
train.eval_period = 8000
