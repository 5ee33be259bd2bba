"""Data: the generated demo dataset, checked COCO registration, augmentations."""
from .datasets import (
    DEMO_DATASETS,
    DatasetError,
    check_registered_coco_datasets,
    default_demo_root,
    load_checked_coco_json,
    prepare_demo_dataset,
    register_checked_coco_instances,
    register_demo_dataset,
    registered_thing_classes,
)
from .demo_dataset import CATEGORIES, generate_demo_dataset
from .transforms import RandomChoice

__all__ = [
    "CATEGORIES",
    "DEMO_DATASETS",
    "DatasetError",
    "RandomChoice",
    "check_registered_coco_datasets",
    "default_demo_root",
    "generate_demo_dataset",
    "load_checked_coco_json",
    "prepare_demo_dataset",
    "register_checked_coco_instances",
    "register_demo_dataset",
    "registered_thing_classes",
]
