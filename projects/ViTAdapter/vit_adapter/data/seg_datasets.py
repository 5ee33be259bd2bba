"""Semantic-segmentation datasets detectron2 does not register: COCO-Stuff-164k,
COCO-Stuff-10k and Pascal Context-59 (ADE20K and Cityscapes are detectron2
builtins: ``ade20k_sem_seg_*``, ``cityscapes_fine_sem_seg_*``).

Layout under ``$DETECTRON2_DATASETS`` (default ``datasets/``); every label is
a PNG of class indices ``0..K-1`` with 255 = unlabelled, named like its image
(same stem):

===============================  ==================================================  =====
name                             images / labels                                     K
===============================  ==================================================  =====
``coco_stuff164k_sem_seg_train``  ``coco/train2017`` /
                                  ``coco/stuffthingmaps_detectron2/train2017``        171
``coco_stuff164k_sem_seg_val``    ``coco/val2017`` /
                                  ``coco/stuffthingmaps_detectron2/val2017``          171
``coco_stuff10k_sem_seg_train``   ``coco_stuff10k/images/train2014`` /
                                  ``coco_stuff10k/annotations_detectron2/train2014``  171
``coco_stuff10k_sem_seg_test``    ``coco_stuff10k/images/test2014`` /
                                  ``coco_stuff10k/annotations_detectron2/test2014``   171
``pascal_context59_sem_seg_train`` ``pascal_ctx_d2/images/training`` /
                                  ``pascal_ctx_d2/annotations_ctx59/training``        59
``pascal_context59_sem_seg_val``  ``pascal_ctx_d2/images/validation`` /
                                  ``pascal_ctx_d2/annotations_ctx59/validation``      59
===============================  ==================================================  =====

How to make them: COCO-Stuff-164k's maps are Mask2Former's
``datasets/prepare_coco_stuff_164k_sem_seg.py`` output (the 182 COCO-Stuff ids
mapped to 0..170, unlabelled 255); mmsegmentation's
``tools/convert_datasets/coco_stuff164k.py`` / ``coco_stuff10k.py`` write the
same values as ``<stem>_labelTrainIds.png``: drop the suffix (e.g.
``for f in *_labelTrainIds.png; do mv "$f" "${f%_labelTrainIds.png}.png"; done``).
Pascal Context-59: mmsegmentation's ``tools/convert_datasets/pascal_context.py``
labels (0 = background, 1..59 the classes) minus 1, background -> 255 (the
release's ``reduce_zero_label``), images copied by split
(``ImageSets/SegmentationContext/{train,val}.txt``).

Difference from the release: its COCO-Stuff-10k pipeline also sets
``reduce_zero_label`` (class 0 "person" becomes unlabelled, the others shift
by one, 171 outputs); here the 171 classes are kept as labelled.
"""
import os
from typing import Dict, Optional, Tuple

from detectron2.data import DatasetCatalog
from detectron2.data.datasets.builtin_meta import COCO_CATEGORIES

from .sem_seg import register_checked_sem_seg

__all__ = ["COCO_STUFF_CLASSES", "PASCAL_CONTEXT_59_CLASSES", "SEG_DATASETS", "register_seg_datasets"]

_COCO_STUFF_ONLY = (
    "banner blanket branch bridge building-other bush cabinet cage cardboard carpet ceiling-other "
    "ceiling-tile cloth clothes clouds counter cupboard curtain desk-stuff dirt door-stuff fence "
    "floor-marble floor-other floor-stone floor-tile floor-wood flower fog food-other fruit "
    "furniture-other grass gravel ground-other hill house leaves light mat metal mirror-stuff moss "
    "mountain mud napkin net paper pavement pillow plant-other plastic platform playingfield railing "
    "railroad river road rock roof rug salad sand sea shelf sky-other skyscraper snow solid-other "
    "stairs stone straw structural-other table tent textile-other towel tree vegetable wall-brick "
    "wall-concrete wall-other wall-panel wall-stone wall-tile wall-wood water-other waterdrops "
    "window-blind window-other wood"
).split()
# COCO-Stuff's 171 used classes in id order: the 80 things, then the 91 stuff classes.
COCO_STUFF_CLASSES = [c["name"] for c in COCO_CATEGORIES if c["isthing"]] + _COCO_STUFF_ONLY
PASCAL_CONTEXT_59_CLASSES = (
    "aeroplane bag bed bedclothes bench bicycle bird boat book bottle building bus cabinet car cat "
    "ceiling chair cloth computer cow cup curtain dog door fence floor flower food grass ground horse "
    "keyboard light motorbike mountain mouse person plate platform pottedplant road rock sheep shelves "
    "sidewalk sign sky snow sofa table track train tree truck tvmonitor wall water window wood"
).split()

# name -> (image folder, label folder, classes), folders relative to the dataset root
SEG_DATASETS: Dict[str, Tuple[str, str, list]] = {
    "coco_stuff164k_sem_seg_train": ("coco/train2017", "coco/stuffthingmaps_detectron2/train2017", COCO_STUFF_CLASSES),
    "coco_stuff164k_sem_seg_val": ("coco/val2017", "coco/stuffthingmaps_detectron2/val2017", COCO_STUFF_CLASSES),
    "coco_stuff10k_sem_seg_train": ("coco_stuff10k/images/train2014",
                                    "coco_stuff10k/annotations_detectron2/train2014", COCO_STUFF_CLASSES),
    "coco_stuff10k_sem_seg_test": ("coco_stuff10k/images/test2014",
                                   "coco_stuff10k/annotations_detectron2/test2014", COCO_STUFF_CLASSES),
    "pascal_context59_sem_seg_train": ("pascal_ctx_d2/images/training", "pascal_ctx_d2/annotations_ctx59/training",
                                       PASCAL_CONTEXT_59_CLASSES),
    "pascal_context59_sem_seg_val": ("pascal_ctx_d2/images/validation",
                                     "pascal_ctx_d2/annotations_ctx59/validation", PASCAL_CONTEXT_59_CLASSES),
}


def register_seg_datasets(root: Optional[str] = None, replace: bool = False):
    """Register :data:`SEG_DATASETS` (lazily: nothing is read until a loader
    runs, which then checks the folders and labels and fails with a
    ``DatasetError`` naming what is missing).

    Args:
        root: dataset root; default ``$DETECTRON2_DATASETS`` or ``datasets``.
        replace: re-register names that already exist (default: keep them, so
            a user's own registration wins).
    """
    root = root or os.environ.get("DETECTRON2_DATASETS", "datasets")
    for name, (images, labels, classes) in SEG_DATASETS.items():
        if name in DatasetCatalog.list() and not replace:
            continue
        register_checked_sem_seg(name, os.path.join(root, images), os.path.join(root, labels), classes)
