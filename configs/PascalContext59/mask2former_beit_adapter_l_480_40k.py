"""Mask2Former, BEiT-Adapter-L (BEiT-L init), Pascal Context-59, crop 480, 40k iterations.

Release row (segmentation/README.md): Mask2Former ViT-Adapter-L, BEiT-L, 40k, 480:
mIoU 67.8 (ss) / 68.2 (ms), 568M params (567.1M counted here, 59 classes).
Release config: segmentation/configs/pascal_context/mask2former_beit_adapter_large_480_40k_pascal_context_59_ss.py

    python train_net.py --config-file configs/PascalContext59/mask2former_beit_adapter_l_480_40k.py --num-gpus 8

| part | setting |
| --- | --- |
| model | BEiT-Adapter-L img_size 480, Mask2Former L head (100 queries), 59 classes; slide 480, stride 320 |
| data | pascal_context59_sem_seg_{train,val} (vit_adapter.data.seg_datasets); resize ratio 0.5-2.0 of (520, 520), crop 480; test short side 520, long <= 4096; 16 images / iter |
| schedule | 40k iters, poly after 1,500 warm-up iters; AdamW 2e-5, wd 0.05, layer decay 0.9 |
| evaluation | every 4k iters |

train.init_checkpoint (a path you fill):
    https://conversationhub.blob.core.windows.net/beit-share-public/beit/beit_large_patch16_224_pt22k_ft22k.pth
"""
from ..ADE20K.mask2former_beit_adapter_l_640_160k import lr_multiplier, model, optimizer, train
from ..common.data_sem_seg import sem_seg_data

CROP = 480
MAX_ITER = 40000
model.backbone.img_size = CROP
model.sem_seg_head.num_classes = 59
model.crop_size = (CROP, CROP)
model.stride = (320, 320)
dataloader = sem_seg_data("pascal_context59_sem_seg_train", "pascal_context59_sem_seg_val", 59, CROP, (520, 520),
                          (4096, 520))
lr_multiplier.warmup_length = 1500 / MAX_ITER
train.max_iter = MAX_ITER
train.output_dir = "output/mask2former_beit_adapter_l_480_40k_pascal_context59"
train.eval_period = 4000
