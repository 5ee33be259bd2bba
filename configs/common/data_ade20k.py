"""ADE20K semantic segmentation, the release's 512 pipeline (`_base_/datasets/ade20k.py`).

Train: Resize with ratio 0.5-2.0 of (2048, 512) (keep ratio), RandomCrop 512 x
512 with category-area constraint 0.75 (ignore 255 not counted), horizontal
flip 0.5, photometric distortion; 16 images per iteration (8 GPUs x 2).
Test: resize to short side 512, long side <= 2048, no flip; the model pads to
its size_divisibility and slides 512 windows (model.test_mode / crop_size /
stride). Images are RGB, normalised by the model's pixel mean / std.

Datasets: detectron2's builtin `ade20k_sem_seg_train` / `ade20k_sem_seg_val`
(150 classes, ignore 255) at
$DETECTRON2_DATASETS/ADEChallengeData2016/{images,annotations_detectron2}/{training,validation},
made by detectron2's datasets/prepare_ade20k_sem_seg.py (labels shifted by -1,
0 -> 255: the release's reduce_zero_label). See docs/segmentation.md.

Other crop sizes (the BEiT-L 640 rows: resize (2048, 640), crop 640, test short side 640):

    dataloader.train.mapper.augmentations = ade20k_train_augmentations(640)
    dataloader.test.mapper.augmentations = ade20k_test_augmentations(640)
"""
from omegaconf import OmegaConf

import detectron2.data.transforms as T
from detectron2.config import LazyCall as L
from detectron2.data import build_detection_test_loader, get_detection_dataset_dicts
from detectron2.evaluation import SemSegEvaluator

from vit_adapter.data.resumable_loader import ResumableTrainLoader
from vit_adapter.data.sem_seg import SemSegDatasetMapper
from vit_adapter.data.sem_seg_transforms import PhotoMetricDistortion, RatioRangeResize

NUM_CLASSES = 150
IGNORE_VALUE = 255
CROP_SIZE = 512


def ade20k_train_augmentations(crop_size=CROP_SIZE, max_size=2048):
    """The release's train pipeline at `crop_size` (512; 640 for the BEiT-L 640 rows:
    Resize (2048, 640) with ratio 0.5-2.0, crop 640)."""
    return [
        L(RatioRangeResize)(scale=(max_size, crop_size), ratio_range=(0.5, 2.0)),
        L(T.RandomCrop_CategoryAreaConstraint)(
            crop_type="absolute",
            crop_size=(crop_size, crop_size),
            single_category_max_area=0.75,
            ignored_category=IGNORE_VALUE,
        ),
        L(T.RandomFlip)(horizontal=True),
        L(PhotoMetricDistortion)(),
    ]


def ade20k_test_augmentations(crop_size=CROP_SIZE, max_size=2048):
    """Resize to short side `crop_size`, long side <= `max_size` (mmseg img_scale (2048, 512))."""
    return [L(T.ResizeShortestEdge)(short_edge_length=crop_size, max_size=max_size)]


dataloader = OmegaConf.create()

dataloader.train = L(ResumableTrainLoader)(
    dataset=L(get_detection_dataset_dicts)(names="ade20k_sem_seg_train"),
    mapper=L(SemSegDatasetMapper)(
        is_train=True,
        augmentations=ade20k_train_augmentations(CROP_SIZE),
        image_format="RGB",
        num_classes=NUM_CLASSES,
        ignore_value=IGNORE_VALUE,
    ),
    total_batch_size=16,
    num_workers=4,
)

dataloader.test = L(build_detection_test_loader)(
    dataset=L(get_detection_dataset_dicts)(names="ade20k_sem_seg_val", filter_empty=False),
    mapper=L(SemSegDatasetMapper)(
        is_train=False,
        augmentations=ade20k_test_augmentations(CROP_SIZE),
        image_format="${...train.mapper.image_format}",
        num_classes="${...train.mapper.num_classes}",
        ignore_value="${...train.mapper.ignore_value}",
    ),
    num_workers=4,
)

dataloader.evaluator = L(SemSegEvaluator)(dataset_name="${..test.dataset.names}")
