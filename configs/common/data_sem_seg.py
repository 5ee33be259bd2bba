"""Semantic-segmentation data of the release's Mask2Former rows, one call per dataset.

`sem_seg_data(...)` is configs/common/data_ade20k.py's loader with the
dataset names, class count and the release pipeline's sizes replaced:
train Resize ratio 0.5-2.0 of `train_scale` (long, short; keep ratio),
RandomCrop `crop_size` with category-area 0.75 (ignore 255 not counted),
flip 0.5, photometric distortion; test resize to short side `test_scale[1]`,
long side <= `test_scale[0]` (mmseg img_scale, keep ratio).

| dataset | names | classes | train_scale / test_scale |
| --- | --- | --- | --- |
| ADE20K (detectron2 builtin) | ade20k_sem_seg_{train,val} | 150 | (4 crop, crop) |
| COCO-Stuff-164k | coco_stuff164k_sem_seg_{train,val} | 171 | (3584, 896) at 896 |
| COCO-Stuff-10k | coco_stuff10k_sem_seg_{train,test} | 171 | (2048, 512) |
| Pascal Context-59 | pascal_context59_sem_seg_{train,val} | 59 | (520, 520) / (4096, 520) |
| Cityscapes (detectron2 builtin) | cityscapes_fine_sem_seg_{train,val} | 19 | (2048, 1024) |

The COCO-Stuff and Pascal Context names are registered by
vit_adapter.data.seg_datasets (layout in its docstring) when a config that
uses this file is loaded.
"""
from omegaconf import OmegaConf

import detectron2.data.transforms as T
from detectron2.config import LazyCall as L
from detectron2.data import build_detection_test_loader, get_detection_dataset_dicts
from detectron2.evaluation import SemSegEvaluator

from vit_adapter.data.resumable_loader import ResumableTrainLoader
from vit_adapter.data.sem_seg import SemSegDatasetMapper
from vit_adapter.data.sem_seg_transforms import PhotoMetricDistortion, RatioRangeResize
from vit_adapter.data.seg_datasets import register_seg_datasets

register_seg_datasets()  # lazy: reads nothing until a loader runs


def sem_seg_data(train_name, test_name, num_classes, crop_size, train_scale, test_scale, batch_size=16,
                 ignore_value=255, num_workers=4):
    """The dataloader config (train / test / evaluator) of one dataset (module docstring)."""
    dataloader = OmegaConf.create()
    dataloader.train = L(ResumableTrainLoader)(
        dataset=L(get_detection_dataset_dicts)(names=train_name),
        mapper=L(SemSegDatasetMapper)(
            is_train=True,
            augmentations=[
                L(RatioRangeResize)(scale=tuple(train_scale), ratio_range=(0.5, 2.0)),
                L(T.RandomCrop_CategoryAreaConstraint)(
                    crop_type="absolute", crop_size=(crop_size, crop_size), single_category_max_area=0.75,
                    ignored_category=ignore_value,
                ),
                L(T.RandomFlip)(horizontal=True),
                L(PhotoMetricDistortion)(),
            ],
            image_format="RGB",
            num_classes=num_classes,
            ignore_value=ignore_value,
        ),
        total_batch_size=batch_size,
        num_workers=num_workers,
    )
    dataloader.test = L(build_detection_test_loader)(
        dataset=L(get_detection_dataset_dicts)(names=test_name, filter_empty=False),
        mapper=L(SemSegDatasetMapper)(
            is_train=False,
            augmentations=[L(T.ResizeShortestEdge)(short_edge_length=min(test_scale), max_size=max(test_scale))],
            image_format="${...train.mapper.image_format}",
            num_classes="${...train.mapper.num_classes}",
            ignore_value="${...train.mapper.ignore_value}",
        ),
        num_workers=num_workers,
    )
    dataloader.evaluator = L(SemSegEvaluator)(dataset_name="${..test.dataset.names}")
    return dataloader


# The default (a config that imports `dataloader` from here): ADE20K at 512.
dataloader = sem_seg_data("ade20k_sem_seg_train", "ade20k_sem_seg_val", 150, 512, (2048, 512), (2048, 512))
