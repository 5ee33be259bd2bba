"""COCO, DETR-style multi-scale training with random crop (the 3x+MS pipeline).

The official 3x configs (`detection/configs/mask_rcnn/*_3x_coco.py`,
"augmentation strategy originates from DETR / Sparse RCNN"):

    RandomFlip(0.5)
    AutoAugment, one of (chosen uniformly):
      [Resize short edge in {480, 512, ..., 800} (step 32), long edge <= 1333]
      [Resize short edge in {400, 500, 600}, long edge <= 1333,
       RandomCrop h, w each uniform in [384, 600],
       Resize short edge in {480, 512, ..., 800}, long edge <= 1333]
    RandomCrop 1024 x 1024 (no-op for images already within it)

`RandomChoice` (vit_adapter.data) is mmdetection's AutoAugment. Boxes are
recomputed from the cropped masks (`recompute_boxes`), as detectron2 does
whenever it crops instance masks. Test: as the single-scale loader.
"""
import detectron2.data.transforms as T
from detectron2.config import LazyCall as L

from vit_adapter.data import RandomChoice

from .data_coco import dataloader

MS_SCALES = tuple(range(480, 801, 32))  # 480, 512, ..., 800

dataloader.train.mapper.augmentations = [
    L(T.RandomFlip)(horizontal=True),
    L(RandomChoice)(
        policies=[
            [L(T.ResizeShortestEdge)(short_edge_length=MS_SCALES, max_size=1333, sample_style="choice")],
            [
                L(T.ResizeShortestEdge)(short_edge_length=(400, 500, 600), max_size=1333, sample_style="choice"),
                L(T.RandomCrop)(crop_type="absolute_range", crop_size=(384, 600)),
                L(T.ResizeShortestEdge)(short_edge_length=MS_SCALES, max_size=1333, sample_style="choice"),
            ],
        ]
    ),
    L(T.RandomCrop)(crop_type="absolute", crop_size=(1024, 1024)),
]
dataloader.train.mapper.recompute_boxes = True
