"""Semantic-segmentation data: checked label maps, a mapper, checked registration.

A semantic-segmentation dataset is detectron2's: dicts with ``file_name`` and
``sem_seg_file_name`` (a label PNG of class indices, ``ignore_label`` where
unlabelled), metadata ``stuff_classes``, ``ignore_label`` and
``evaluator_type="sem_seg"`` (detectron2's builtin ``ade20k_sem_seg_*``).

Label files are checked wherever they are read (:func:`read_label_map`), so
training never runs on garbage. Each problem is one ``DatasetError`` line
naming the file:

==========================================  ===========================================================
label file                                  what happens
==========================================  ===========================================================
missing                                     DatasetError (registration, mapper)
image without a label (or label, no image)  DatasetError at registration (``unmatched="skip"``: left
                                            out, with a logged count)
RGB / RGBA / LA / float image               DatasetError: class indices expected (mode "L" or "P")
palette ("P") image                         its pixel indices are the classes (Pascal VOC convention)
16-bit ("I;16", "I") image                  accepted as class indices (more than 256 classes), checked
                                            like any other
value >= num_classes, not the ignore value  DatasetError listing the bad values
size differs from its image                 DatasetError naming both sizes
==========================================  ===========================================================

``register_checked_sem_seg`` registers an image folder + a label folder
(labels paired by file stem), checks headers (mode, size, pairing) of every
file at once and, for up to ``DECODE_CHECK_MAX_IMAGES`` images, the label
values too. ``SemSegDatasetMapper`` checks each label it reads (training and
evaluation), so large datasets are covered as they are used.
"""
import logging
import os
from functools import partial
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from PIL import Image

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from detectron2.utils.file_io import PathManager

from .datasets import DECODE_CHECK_MAX_IMAGES, DatasetError
from .image_io import BadImageError, read_image

__all__ = [
    "SemSegDatasetMapper",
    "check_label_values",
    "load_checked_sem_seg",
    "read_label_map",
    "register_checked_sem_seg",
]

logger = logging.getLogger(__name__)

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
_INDEX_MODES = ("L", "P", "1", "I;16", "I;16B", "I;16L", "I")


def _open_label(path: str) -> Image.Image:
    if not PathManager.isfile(path):
        raise DatasetError(f"label file not found: {path}")
    try:
        with PathManager.open(path, "rb") as f:
            label = Image.open(f)
            label.load()
    except Exception as e:
        raise DatasetError(f"label file {path} is corrupt or not an image ({type(e).__name__}: {e})") from None
    if label.mode not in _INDEX_MODES:
        raise DatasetError(
            f"label file {path} is a {label.mode} image: expected one channel of class indices "
            "(8-bit 'L', palette 'P' or 16-bit PNG), not a colour rendering of the classes"
        )
    return label


def check_label_values(label: np.ndarray, num_classes: Optional[int], ignore_value: int, path: str):
    """DatasetError if ``label`` holds a value >= num_classes that is not ``ignore_value``."""
    if num_classes is None:
        return
    values = np.unique(label)
    bad = values[(values >= num_classes) & (values != ignore_value)]
    if len(bad):
        shown = ", ".join(str(int(v)) for v in bad[:8]) + (", ..." if len(bad) > 8 else "")
        raise DatasetError(
            f"label file {path} has values {shown} outside [0, {num_classes}) that are not the ignore "
            f"value {ignore_value}: the labels do not match the {num_classes} classes"
        )


def read_label_map(path: str, num_classes: Optional[int] = None, ignore_value: int = 255, image_size=None) -> np.ndarray:
    """Read and check a label PNG (see the module table).

    Args:
        path (str): label file.
        num_classes (int or None): values must be < num_classes or ``ignore_value``
            (None: not checked).
        ignore_value (int): label of unlabelled pixels.
        image_size ((int, int) or None): (height, width) the label must have.

    Returns:
        (H, W) int64 array of class indices.
    """
    label = _open_label(path)
    if image_size is not None and (label.height, label.width) != tuple(image_size):
        raise DatasetError(
            f"label file {path} is {label.width}x{label.height} (WxH) but its image is "
            f"{image_size[1]}x{image_size[0]}: labels must have their image's size"
        )
    array = np.asarray(label).astype(np.int64)
    check_label_values(array, num_classes, ignore_value, path)
    return array


class SemSegDatasetMapper:
    """Dataset dict -> model input for semantic segmentation, with checked labels.

    Output: ``"image"`` (3, H, W) uint8 tensor in ``image_format`` and, when the
    dict has ``sem_seg_file_name``, ``"sem_seg"`` (H, W) long tensor, both after
    the augmentations (detectron2's ``DatasetMapper`` layout, read by
    ``SemanticSegmentor``). ``height`` / ``width`` are kept for the output size.
    """

    def __init__(
        self,
        is_train: bool,
        augmentations: Sequence,
        image_format: str = "RGB",
        num_classes: Optional[int] = None,
        ignore_value: int = 255,
    ):
        """
        Args:
            is_train (bool): whether the mapper is used for training (labels
                are read in both modes: the evaluator reads them too).
            augmentations (list[Augmentation]): applied to image and label together.
            image_format (str): "RGB" or "BGR".
            num_classes (int or None): label values are checked against it.
            ignore_value (int): label of unlabelled pixels.
        """
        self.is_train = is_train
        self.augmentations = T.AugmentationList(list(augmentations))
        self.image_format = image_format
        self.num_classes = num_classes
        self.ignore_value = ignore_value

    def __call__(self, dataset_dict: Dict) -> Dict:
        dataset_dict = dict(dataset_dict)
        path = dataset_dict["file_name"]
        try:
            image = read_image(path, format=self.image_format)
        except BadImageError as e:
            raise DatasetError(f"image file {path} cannot be used ({e})") from None
        utils.check_image_size(dataset_dict, image)
        label_file = dataset_dict.pop("sem_seg_file_name", None)
        label = None
        if label_file is not None:
            label = read_label_map(label_file, self.num_classes, self.ignore_value, image.shape[:2])
            label = label.astype(np.uint8 if label.max(initial=0) < 256 else np.int32)
        aug_input = T.AugInput(image, sem_seg=label)
        self.augmentations(aug_input)
        dataset_dict["image"] = torch.as_tensor(np.ascontiguousarray(aug_input.image.transpose(2, 0, 1)))
        if label is not None:
            dataset_dict["sem_seg"] = torch.as_tensor(aug_input.sem_seg.astype(np.int64))
        return dataset_dict


def _list_files(folder: str, exts) -> Dict[str, str]:
    if not os.path.isdir(folder):
        raise DatasetError(f"folder not found: {folder}")
    out = {}
    for name in sorted(os.listdir(folder)):
        stem, ext = os.path.splitext(name)
        if ext.lower() in exts:
            out[stem] = os.path.join(folder, name)
    return out


def _summary(names: List[str]) -> str:
    return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")


def load_checked_sem_seg(
    image_root: str,
    label_root: str,
    num_classes: int,
    ignore_value: int = 255,
    dataset_name: Optional[str] = None,
    label_ext: str = ".png",
    unmatched: str = "error",
    check_values: str = "auto",
) -> List[Dict]:
    """Pair images with label PNGs by file stem and check them.

    Args:
        image_root (str): image folder (jpg, png, ...).
        label_root (str): label folder (``<stem><label_ext>``).
        num_classes (int): number of classes; label values must be < it or ``ignore_value``.
        ignore_value (int): label of unlabelled pixels.
        dataset_name (str or None): for the messages.
        label_ext (str): label file extension.
        unmatched (str): "error" (an image without a label, or a label without
            an image, stops) or "skip" (left out, logged count).
        check_values (str): "decode" (read every label now), "none", or "auto"
            ("decode" for at most ``DECODE_CHECK_MAX_IMAGES`` images). Headers
            (mode, size, pairing) are always checked.

    Returns:
        list[dict]: ``file_name``, ``sem_seg_file_name``, ``height``, ``width``.
    """
    name = f"dataset '{dataset_name}'" if dataset_name else "dataset"
    if unmatched not in ("error", "skip"):
        raise ValueError(f"unmatched must be 'error' or 'skip', got {unmatched!r}")
    images = _list_files(image_root, IMAGE_EXTS)
    labels = _list_files(label_root, (label_ext.lower(),))
    if not images:
        raise DatasetError(f"{name}: no images in {image_root}")
    no_label = sorted(set(images) - set(labels))
    no_image = sorted(set(labels) - set(images))
    for missing, what in ((no_label, f"have no label file{label_ext} in {label_root}"), (no_image, f"have no image in {image_root}")):
        if not missing:
            continue
        msg = f"{name}: {len(missing)} files {what}: {_summary(missing)}"
        if unmatched == "error":
            raise DatasetError(msg + " (unmatched='skip' leaves them out)")
        logger.warning(msg + "; left out")
    stems = sorted(set(images) & set(labels))
    if not stems:
        raise DatasetError(f"{name}: no image in {image_root} has a label in {label_root}")
    if check_values == "auto":
        check_values = "decode" if len(stems) <= DECODE_CHECK_MAX_IMAGES else "none"
    if check_values not in ("decode", "none"):
        raise ValueError(f"check_values must be 'auto', 'decode' or 'none', got {check_values!r}")
    dicts = []
    for stem in stems:
        try:
            with Image.open(images[stem]) as im:
                w, h = im.size
        except Exception as e:
            raise DatasetError(f"{name}: image file {images[stem]} is corrupt or not an image ({e})") from None
        if check_values == "decode":
            read_label_map(labels[stem], num_classes, ignore_value, (h, w))
        else:
            label = _open_label(labels[stem])
            if (label.height, label.width) != (h, w):
                read_label_map(labels[stem], None, ignore_value, (h, w))  # the size error
        dicts.append({"file_name": images[stem], "sem_seg_file_name": labels[stem], "height": h, "width": w})
    return dicts


def register_checked_sem_seg(
    name: str,
    image_root: str,
    label_root: str,
    stuff_classes: Sequence[str],
    ignore_value: int = 255,
    label_ext: str = ".png",
    unmatched: str = "error",
    check_values: str = "auto",
    metadata: Optional[Dict] = None,
):
    """Register an image folder + label PNG folder as a checked semantic-segmentation dataset.

    The loader (:func:`load_checked_sem_seg`) runs at the first
    ``DatasetCatalog.get(name)``; the metadata (``stuff_classes``,
    ``ignore_label``, ``evaluator_type="sem_seg"``, folders) is set now, so
    ``SemSegEvaluator`` and visualisation find it. Registering a name again
    replaces the previous registration.

        register_checked_sem_seg("my_seg_train", "data/images/train", "data/labels/train",
                                 stuff_classes=["background", "road", "car"])
    """
    if not stuff_classes:
        raise ValueError("stuff_classes must name at least one class")
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    DatasetCatalog.register(
        name,
        partial(
            load_checked_sem_seg, image_root, label_root, len(stuff_classes), ignore_value, name, label_ext,
            unmatched, check_values,
        ),
    )
    MetadataCatalog.get(name).set(
        stuff_classes=list(stuff_classes),
        ignore_label=ignore_value,
        evaluator_type="sem_seg",
        image_root=image_root,
        sem_seg_root=label_root,
        **(metadata or {}),
    )
