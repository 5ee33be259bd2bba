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

__all__ = ["RobustDatasetMapper", "BadImageError"]


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

    Attributes:
        skipped (collections.Counter): images returned as None, by reason.
        dropped (collections.Counter): annotations removed, by reason.
    """

    def __init__(self, *args, num_classes=None, **kwargs):
        super().__init__(*args, **kwargs)
        if self.proposal_topk is not None or self.use_keypoint:
            raise ValueError("RobustDatasetMapper handles boxes and masks only (no proposals / keypoints)")
        self.num_classes = num_classes
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
        transforms = self.augmentations(aug_input)
        image = aug_input.image
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
