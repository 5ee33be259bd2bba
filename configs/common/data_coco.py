"""COCO instance segmentation, single scale (the 1x schedule's pipeline).

Official `coco_instance.py`: resize to (1333, 800) keeping the ratio (short
edge 800, long edge <= 1333), horizontal flip 0.5, pad to 32 (the backbone's
size_divisibility), 16 images per iteration. Test: the same resize, no flip.
Images are RGB, normalised by the model's pixel mean / std (ImageNet).

Datasets: detectron2's builtin `coco_2017_train` / `coco_2017_val`, read from
$DETECTRON2_DATASETS/coco (annotations/instances_{train,val}2017.json,
train2017/, val2017/). train_net.py gives them the checked loader of
vit_adapter.data (clear errors for missing / broken files).
"""
from omegaconf import OmegaConf

import detectron2.data.transforms as T
from detectron2.config import LazyCall as L
from detectron2.data import build_detection_test_loader, get_detection_dataset_dicts
from detectron2.evaluation import COCOEvaluator

from vit_adapter.data.robust_mapper import RobustDatasetMapper
from vit_adapter.data.resumable_loader import ResumableTrainLoader

dataloader = OmegaConf.create()

# ResumableTrainLoader: detectron2's loader with iteration-exact --resume; RobustDatasetMapper:
# DatasetMapper that skips broken images and drops bad annotations (docs/robustness.md).
dataloader.train = L(ResumableTrainLoader)(
    dataset=L(get_detection_dataset_dicts)(names="coco_2017_train"),
    mapper=L(RobustDatasetMapper)(
        is_train=True,
        augmentations=[
            L(T.ResizeShortestEdge)(short_edge_length=800, max_size=1333),
            L(T.RandomFlip)(horizontal=True),
        ],
        image_format="RGB",
        use_instance_mask=True,
    ),
    total_batch_size=16,
    num_workers=4,
)

dataloader.test = L(build_detection_test_loader)(
    dataset=L(get_detection_dataset_dicts)(names="coco_2017_val", filter_empty=False),
    mapper=L(RobustDatasetMapper)(
        is_train=False,
        augmentations=[L(T.ResizeShortestEdge)(short_edge_length=800, max_size=1333)],
        image_format="${...train.mapper.image_format}",
    ),
    num_workers=4,
)

dataloader.evaluator = L(COCOEvaluator)(dataset_name="${..test.dataset.names}")
