"""Mask2Former, BEiT-Adapter-L (BEiT-L init), COCO-Stuff-10k, crop 512, 40k iterations.

Release row (segmentation/README.md): Mask2Former ViT-Adapter-L, BEiT-L, 40k, 512:
mIoU 53.2 (ss) / 54.2 (ms), 568M params (567.4M counted here, 171 classes).
Release config: segmentation/configs/coco_stuff10k/mask2former_beit_adapter_large_512_40k_cocostuff10k_ss.py

    python train_net.py --config-file configs/COCOStuff10k/mask2former_beit_adapter_l_512_40k.py --num-gpus 8

| part | setting |
| --- | --- |
| model | BEiT-Adapter-L img_size 512, Mask2Former L head (100 queries), 171 classes; slide 512, stride 341 |
| data | coco_stuff10k_sem_seg_{train,test} (vit_adapter.data.seg_datasets); resize ratio 0.5-2.0 of (2048, 512), crop 512; 16 images / iter |
| schedule | 40k iters, poly after 1,500 warm-up iters; AdamW 2e-5, wd 0.05, layer decay 0.9 |
| evaluation | every 4k iters |

The release's COCO-Stuff-10k pipeline sets `reduce_zero_label` (see
vit_adapter.data.seg_datasets: not reproduced).

train.init_checkpoint (a path you fill):
    https://conversationhub.blob.core.windows.net/beit-share-public/beit/beit_large_patch16_224_pt22k_ft22k.pth
"""
from ..ADE20K.mask2former_beit_adapter_l_640_160k import lr_multiplier, model, optimizer, train
from ..common.data_sem_seg import sem_seg_data

CROP = 512
MAX_ITER = 40000
model.backbone.img_size = CROP
model.sem_seg_head.num_classes = 171
model.crop_size = (CROP, CROP)
model.stride = (341, 341)
dataloader = sem_seg_data("coco_stuff10k_sem_seg_train", "coco_stuff10k_sem_seg_test", 171, CROP, (2048, 512),
                          (2048, 512))
lr_multiplier.warmup_length = 1500 / MAX_ITER
train.max_iter = MAX_ITER
train.output_dir = "output/mask2former_beit_adapter_l_512_40k_cocostuff10k"
train.eval_period = 4000
