"""Mask2Former, BEiT-Adapter-L, Cityscapes, crop 896, 80k iterations, from the Mapillary model.

Release row (segmentation/README.md): Mask2Former ViT-Adapter-L, Mapillary, 80k, 896:
mIoU 84.9 (ss) / 85.8 (ms), 571M params (570.4M counted here, 19 classes, 100 queries).
Release config: segmentation/configs/cityscapes/mask2former_beit_adapter_large_896_80k_cityscapes_ss.py

    python train_net.py --config-file configs/Cityscapes/mask2former_beit_adapter_l_896_80k.py --num-gpus 8

| part | setting |
| --- | --- |
| model | BEiT-Adapter-L img_size 896, Mask2Former L head, 100 queries, 19 classes; slide 896, stride 512 |
| data | detectron2's cityscapes_fine_sem_seg_{train,val} (labelTrainIds PNGs from cityscapesscripts' createTrainIdLabelImgs); resize ratio 0.5-2.0 of (2048, 1024), crop 896; test short side 1024, long <= 2048; 8 images / iter |
| schedule | 80k iters, poly after 1,500 warm-up iters; AdamW 2e-5, wd 0.05, layer decay 0.9 |
| evaluation | detectron2's SemSegEvaluator (mIoU), every 8k iters (the release: every 1k) |

train.init_checkpoint (a path you fill; convert the release checkpoint first):
    https://github.com/czczup/ViT-Adapter/releases/download/v0.2.3/mask2former_beit_adapter_large_896_80k_mapillary.zip
"""
from ..ADE20K.mask2former_beit_adapter_l_896_80k import lr_multiplier, model, optimizer, train
from ..common.data_sem_seg import sem_seg_data

model.sem_seg_head.num_classes = 19
model.sem_seg_head.predictor.num_queries = 100
dataloader = sem_seg_data("cityscapes_fine_sem_seg_train", "cityscapes_fine_sem_seg_val", 19, 896, (2048, 1024),
                          (2048, 1024), batch_size=8)
train.init_checkpoint = "checkpoints/mask2former_beit_adapter_large_896_80k_mapillary_d2.pth"
train.output_dir = "output/mask2former_beit_adapter_l_896_80k_cityscapes"
