"""A detectron2 `DatasetMapper` that survives the bad inputs of real datasets.

`RobustDatasetMapper` is a drop-in replacement for detectron2's
`DatasetMapper` (same arguments, plus `num_classes`). It applies the policy of
docs/robustness.md:

======================================  =========================================================
input                                   what happens
======================================  =========================================================
undecodable / truncated image file      training: skipped (returns None), warning + running count;
                                        testing: DatasetError (an evaluation must see every image)
image over the pixel limit              same as undecodable, checked from the header before decoding
                                        (`vit_adapter.data.image_io.max_image_pixels`)
image size differs from the dataset's   same as undecodable (annotations would not match pixels)
image the augmentations cannot resize   same as undecodable (e.g. 40000 x 1 px: the resize rounds a
                                        side to 0 px)
more than `max_annotations` annotations training: a random subset of `max_annotations` is kept,
                                        warning + running count (the RPN's matching is
                                        annotations x anchors floats)
grayscale, palette, RGBA, 16-bit image  converted to the model's format (alpha dropped,
                                        16-bit scaled to 8-bit), no warning
image smaller than 32 px / any size     accepted: the model pads to `size_divisibility` (32)
box partly outside the image            clipped to the image (detectron2)
box fully outside / zero area / NaN,    annotation dropped, warning + running count
not 4 numbers
polygon with < 3 points / NaN / empty / polygon dropped; annotation dropped when none is left
more than one image size outside
no segmentation, RLE of another size,   annotation dropped (masks used), warning + running count
RLE with instance_mask_format=polygon
image with no (usable) annotation       kept as a negative image (empty `Instances`)
category id outside [0, num_classes)    DatasetError: the dataset does not match the model
======================================  =========================================================

Returning None makes the data loader use another image: detectron2's
`MapDataset` retries with a random index, `vit_adapter.data.resumable_loader`
with a deterministic one (so resumed runs stay exact). Counts are per
process (each data-loader worker counts its own images) and appear in the
warnings, e.g.::

    RobustDatasetMapper: skipped image train/000123.jpg (undecodable: image file is truncated);
    skipped so far in this process: 3 images (undecodable: 3), dropped 7 annotations (zero area: 5, ...)
"""
import collections
import copy
import logging
import os

import numpy as np
import pycocotools.mask as mask_util
import torch

from detectron2.data import DatasetMapper
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from detectron2.structures import BoxMode

from .annotations import bbox_problem, segmentation_problem
from .datasets import DatasetError
from .image_io import BadImageError, ImageTooLargeError, read_image

__all__ = ["DEFAULT_MAX_ANNOTATIONS", "MAX_ANNOTATIONS_ENV", "RobustDatasetMapper", "BadImageError"]

# Annotations trained per image at most: the RPN matches every ground-truth box against
# every anchor (a float32 matrix of annotations x anchors, several copies while it is
# computed), so one record with 200,000 annotations exhausts memory. COCO's most crowded
# image has 93 annotations, LVIS's under 800; the memory measured at the cap is in
# docs/robustness.md.
DEFAULT_MAX_ANNOTATIONS = 1000
MAX_ANNOTATIONS_ENV = "VIT_ADAPTER_MAX_ANNOTATIONS"


def max_annotations_per_image(value=None) -> int:
    """`value` if given, else $VIT_ADAPTER_MAX_ANNOTATIONS, else DEFAULT_MAX_ANNOTATIONS; 0: no cap."""
    if value is not None:
        return int(value)
    text = os.environ.get(MAX_ANNOTATIONS_ENV, "").strip()
    if not text:
        return DEFAULT_MAX_ANNOTATIONS
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{MAX_ANNOTATIONS_ENV}={text!r} is not a number of annotations") from None


logger = logging.getLogger(__name__)

# Warnings per reason printed in full; after that one warning every `_LOG_EVERY` occurrences.
_LOG_FIRST = 10
_LOG_EVERY = 100


class RobustDatasetMapper(DatasetMapper):
    """`DatasetMapper` with the skip / stop policy of the module docstring.

    Accepts every argument of detectron2's `DatasetMapper` (`is_train`,
    `augmentations`, `image_format`, `use_instance_mask`, ...) plus:

    Args:
        num_classes (int or None): number of categories of the model; a
            (contiguous) `category_id` outside [0, num_classes) raises
            DatasetError. None: not checked.
        max_annotations (int or None): training keeps a random subset of this
            many (non-crowd) annotations of an image that has more, with a
            warning and a count ("subsampled"); 0: no cap. None:
            `max_annotations_per_image()` ($VIT_ADAPTER_MAX_ANNOTATIONS, else
            DEFAULT_MAX_ANNOTATIONS).

    Attributes:
        skipped (collections.Counter): images returned as None, by reason.
        dropped (collections.Counter): annotations removed, by reason.
    """

    def __init__(self, *args, num_classes=None, max_annotations=None, **kwargs):
        super().__init__(*args, **kwargs)
        if self.proposal_topk is not None or self.use_keypoint:
            raise ValueError("RobustDatasetMapper handles boxes and masks only (no proposals / keypoints)")
        self.num_classes = num_classes
        self.max_annotations = max_annotations_per_image(max_annotations)
        self.skipped = collections.Counter()
        self.dropped = collections.Counter()

    def _summary(self) -> str:
        def fmt(counter):
            return ", ".join(f"{k}: {v}" for k, v in sorted(counter.items()))

        return (
            f"skipped so far in this process: {sum(self.skipped.values())} images ({fmt(self.skipped)}), "
            f"dropped {sum(self.dropped.values())} annotations ({fmt(self.dropped)})"
        )

    def _should_log(self, count: int) -> bool:
        return count <= _LOG_FIRST or count % _LOG_EVERY == 0

    def _skip(self, dataset_dict, reason: str, detail: str):
        file_name = dataset_dict.get("file_name", "<no file_name>")
        if not self.is_train:
            raise DatasetError(f"image {file_name} cannot be used ({reason}: {detail})")
        self.skipped[reason] += 1
        if self._should_log(self.skipped[reason]):
            logger.warning(
                f"RobustDatasetMapper: skipped image {file_name} ({reason}: {detail}); {self._summary()}"
            )
        return None

    def _drop(self, dataset_dict, reason: str, n: int = 1):
        if n <= 0:
            return
        before = self.dropped[reason]
        self.dropped[reason] += n
        if self._should_log(self.dropped[reason]) or before // _LOG_EVERY != self.dropped[reason] // _LOG_EVERY:
            logger.warning(
                f"RobustDatasetMapper: dropped {n} annotation(s) of {dataset_dict.get('file_name')} "
                f"({reason}); {self._summary()}"
            )

    def _subsample_annotations(self, dataset_dict):
        """A shallow copy of `dataset_dict` with at most `max_annotations` non-crowd
        annotations (a random subset, in their order; the loader seeds the RNG)."""
        annos = dataset_dict.get("annotations") or []
        if not self.max_annotations or len(annos) <= self.max_annotations:
            return dataset_dict
        regular = [i for i, a in enumerate(annos) if not a.get("iscrowd", 0)]
        if len(regular) <= self.max_annotations:
            return dataset_dict
        chosen = {regular[j] for j in np.random.choice(len(regular), self.max_annotations, replace=False)}
        kept = [a for i, a in enumerate(annos) if i in chosen or a.get("iscrowd", 0)]
        self._drop(dataset_dict, f"subsampled: over {self.max_annotations} per image", len(annos) - len(kept))
        return {**dataset_dict, "annotations": kept}

    def _check_category(self, dataset_dict, anno):
        cat = anno.get("category_id")
        if self.num_classes is None:
            return
        if not isinstance(cat, (int, np.integer)) or not 0 <= cat < self.num_classes:
            raise DatasetError(
                f"annotation of image {dataset_dict.get('file_name')} has category_id {cat!r}, outside "
                f"[0, {self.num_classes}) of the model (model.roi_heads.num_classes = {self.num_classes}): "
                "the dataset's categories do not match the config"
            )

    def _mask_problem(self, anno, height: int, width: int):
        """Why `anno` has no usable mask (its unusable polygons are removed in place), or None."""
        if "segmentation" not in anno:
            return "no segmentation"
        segm, reason = segmentation_problem(anno["segmentation"], height, width)
        if reason:
            return "bad RLE" if reason.startswith("bad RLE") else "no valid polygon"
        if isinstance(segm, dict):
            if self.instance_mask_format == "polygon":
                return "RLE mask (needs instance_mask_format='bitmask')"
            if not isinstance(segm["counts"], (str, bytes)):  # uncompressed: detectron2 decodes compressed only
                segm = mask_util.frPyObjects(segm, height, width)
        anno["segmentation"] = segm
        return None

    def _clean_annotations(self, dataset_dict, height: int, width: int):
        """Drop annotations that cannot become a training target (before augmentation)."""
        kept = []
        for anno in dataset_dict.get("annotations", []):
            self._check_category(dataset_dict, anno)
            if anno.get("iscrowd", 0):
                kept.append(anno)
                continue
            reason = bbox_problem(list(anno["bbox"]) if isinstance(anno.get("bbox"), (list, tuple)) else None)
            if reason:
                self._drop(dataset_dict, "non-finite box" if "non-finite" in reason else "malformed box")
                continue
            try:
                box = BoxMode.convert(list(anno["bbox"]), anno["bbox_mode"], BoxMode.XYXY_ABS)
            except Exception:
                self._drop(dataset_dict, "malformed box")
                continue
            x0, y0, x1, y1 = [float(v) for v in box]
            if x1 - x0 <= 0 or y1 - y0 <= 0:
                self._drop(dataset_dict, "zero-area box")
                continue
            if x1 <= 0 or y1 <= 0 or x0 >= width or y0 >= height:
                self._drop(dataset_dict, "box outside the image")
                continue
            if self.use_instance_mask:
                reason = self._mask_problem(anno, height, width)
                if reason:
                    self._drop(dataset_dict, reason)
                    continue
            kept.append(anno)
        dataset_dict["annotations"] = kept

    def __call__(self, dataset_dict):
        """
        Args:
            dataset_dict (dict): one image in detectron2's dataset format.

        Returns:
            dict with "image" (C, H, W uint8 tensor) and, when training,
            "instances"; or None when training and the image must be skipped.
        """
        if self.is_train:
            dataset_dict = self._subsample_annotations(dataset_dict)  # before copying them
        else:  # evaluation reads the ground truth from the annotation file, not from here
            dataset_dict = {k: v for k, v in dataset_dict.items() if k != "annotations"}
        dataset_dict = copy.deepcopy(dataset_dict)
        try:
            image = read_image(dataset_dict["file_name"], format=self.image_format)
        except ImageTooLargeError as e:
            return self._skip(dataset_dict, "too large", str(e))
        except BadImageError as e:
            return self._skip(dataset_dict, "undecodable", str(e))
        try:
            utils.check_image_size(dataset_dict, image)
        except utils.SizeMismatchError as e:
            return self._skip(dataset_dict, "size mismatch", str(e))

        if self.is_train and "annotations" in dataset_dict:
            self._clean_annotations(dataset_dict, *image.shape[:2])

        aug_input = T.AugInput(image)
        try:
            transforms = self.augmentations(aug_input)
        except ValueError as e:  # PIL: "height and width must be > 0" for a side resized to 0 px
            h, w = image.shape[:2]
            return self._skip(dataset_dict, "cannot be resized", f"{w}x{h} pixels: {e}")
        image = aug_input.image
        if min(image.shape[:2]) < 1:
            h, w = dataset_dict.get("height"), dataset_dict.get("width")
            return self._skip(dataset_dict, "cannot be resized", f"{w}x{h} pixels become {image.shape[1]}x{image.shape[0]}")
        image_shape = image.shape[:2]
        dataset_dict["image"] = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))

        if not self.is_train:
            dataset_dict.pop("annotations", None)
            return dataset_dict
        if "annotations" in dataset_dict:
            n_annos = sum(1 for a in dataset_dict["annotations"] if not a.get("iscrowd", 0))
            self._transform_annotations(dataset_dict, transforms, image_shape)
            # Instances emptied by the augmentation (e.g. cropped away) are removed by detectron2.
            self._drop(dataset_dict, "empty after augmentation", n_annos - len(dataset_dict["instances"]))
        return dataset_dict
