"""Mask2Former, BEiT-Adapter-L (BEiT-L init), COCO-Stuff-164k, crop 896, 80k iterations.

Release row (segmentation/README.md): Mask2Former ViT-Adapter-L, BEiT-L, 80k, 896:
mIoU 51.7 (ss) / 52.0 (ms), 571M params (570.8M counted here, 171 classes).
Release config: segmentation/configs/coco_stuff164k/mask2former_beit_adapter_large_896_80k_cocostuff164k_ss.py

    python train_net.py --config-file configs/COCOStuff164k/mask2former_beit_adapter_l_896_80k.py --num-gpus 8

| part | setting |
| --- | --- |
| model | the ADE20K 896 network (200 queries, slide 896 / 512) with 171 classes |
| data | coco_stuff164k_sem_seg_{train,val} (vit_adapter.data.seg_datasets); resize ratio 0.5-2.0 of (3584, 896), crop 896; 8 images / iter |
| schedule | 80k iters, poly after 1,500 warm-up iters; AdamW 2e-5, wd 0.05, layer decay 0.9 |
| evaluation | every 8k iters |

train.init_checkpoint (a path you fill):
    https://conversationhub.blob.core.windows.net/beit-share-public/beit/beit_large_patch16_224_pt22k_ft22k.pth
"""
from ..ADE20K.mask2former_beit_adapter_l_896_80k import lr_multiplier, model, optimizer, train
from ..common.data_sem_seg import sem_seg_data

model.sem_seg_head.num_classes = 171
dataloader = sem_seg_data("coco_stuff164k_sem_seg_train", "coco_stuff164k_sem_seg_val", 171, 896, (3584, 896),
                          (3584, 896), batch_size=8)
train.init_checkpoint = "checkpoints/beit_large_patch16_224_pt22k_ft22k.pth"
train.output_dir = "output/mask2former_beit_adapter_l_896_80k_cocostuff164k"
