"""Validation of COCO annotation records before detectron2 or pycocotools see them.

One bad record must not crash or exhaust a run: pycocotools rasterises a
polygon by walking its outline, so a NaN / inf / far-away coordinate makes it
allocate without bound (a NaN polygon took 21.8 GB in `frPyObjects`), an
empty `segmentation` raises IndexError in `COCOeval`, a missing `area` /
`iscrowd` raises KeyError there. The checks here bound every record by the
size of its image:

- `bbox`: 4 finite numbers;
- polygon: at least 3 points (6 numbers), an even count, finite, every
  coordinate within one image size of the image (x in [-W, 2W], y in
  [-H, 2H]), so its outline is at most a few times the image's perimeter;
- RLE: `size` == [H, W] of its image; uncompressed `counts` non-negative
  integers summing to H * W; compressed `counts` a string;
- the image's `width` x `height` positive integers.

`validate_coco_dict` applies them to a whole COCO file (the place the data
enters: `vit_adapter.data.load_checked_coco_json`); the per-record helpers
(`bbox_problem`, `polygon_problem`, `rle_problem`) are shared with
`RobustDatasetMapper`, which applies them to dataset dicts at train time.
"""
import collections
import math
import numbers

__all__ = [
    "EVAL_REQUIRED_FIELDS",
    "POLYGONS_REMOVED",
    "bbox_problem",
    "polygon_problem",
    "rle_problem",
    "segmentation_problem",
    "validate_coco_dict",
]

# Counter key of `validate_coco_dict` for annotations kept without some of their polygons.
POLYGONS_REMOVED = "polygons removed, annotation kept"
# pycocotools' COCOeval reads these from every ground-truth annotation.
EVAL_REQUIRED_FIELDS = ("area", "iscrowd", "segmentation")


def _is_number(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def bbox_problem(bbox):
    """None if `bbox` is 4 finite numbers, else the reason (str)."""
    if not isinstance(bbox, (list, tuple)) or len(bbox) != 4:
        n = len(bbox) if isinstance(bbox, (list, tuple)) else type(bbox).__name__
        return f"malformed bbox: not 4 numbers ({n})"
    if not all(_is_number(v) and math.isfinite(v) for v in bbox):
        return "malformed bbox: a non-finite or non-numeric value"
    return None


def polygon_problem(poly, height, width):
    """None if `poly` (flat [x0, y0, x1, y1, ...]) is a usable polygon of an
    image of `height` x `width`, else the reason (str)."""
    if not isinstance(poly, (list, tuple)):
        return f"malformed polygon: a {type(poly).__name__}, not a list of numbers"
    if len(poly) < 6:
        return f"polygon with < 3 points: {len(poly)} numbers"
    if len(poly) % 2:
        return f"malformed polygon: an odd number of coordinates ({len(poly)})"
    if not all(_is_number(v) for v in poly):
        return "malformed polygon: a non-numeric coordinate"
    if not all(math.isfinite(v) for v in poly):
        return "non-finite polygon: a NaN / inf coordinate"
    xs, ys = poly[0::2], poly[1::2]
    if min(xs) < -width or max(xs) > 2 * width or min(ys) < -height or max(ys) > 2 * height:
        return f"polygon far outside the image: a coordinate more than one image size outside {width}x{height}"
    return None


def rle_problem(segm, height, width):
    """None if the RLE dict `segm` is a mask of an image of `height` x `width`, else the reason."""
    size, counts = segm.get("size"), segm.get("counts")
    if not isinstance(size, (list, tuple)) or list(size) != [height, width]:
        return f"bad RLE: size {size!r} is not the image size [{height}, {width}]"
    if isinstance(counts, (str, bytes)):
        return None
    if not isinstance(counts, (list, tuple)) or not all(
        isinstance(c, numbers.Integral) and not isinstance(c, bool) and c >= 0 for c in counts
    ):
        return "bad RLE: counts are neither a string nor a list of non-negative integers"
    if sum(counts) != height * width:
        return f"bad RLE: counts sum to {sum(counts)}, not height x width = {height * width}"
    return None


def segmentation_problem(segm, height, width):
    """(segm, reason): `segm` with its unusable polygons removed, and None; or
    (None, reason) when nothing usable is left (reason: "<kind>: <detail>")."""
    if isinstance(segm, dict):
        reason = rle_problem(segm, height, width)
        return (None, reason) if reason else (segm, None)
    if not isinstance(segm, (list, tuple)):
        return None, f"malformed segmentation: a {type(segm).__name__}, not polygons or an RLE"
    if not segm:
        return None, "empty segmentation: []"
    reasons = [polygon_problem(p, height, width) for p in segm]
    kept = [p for p, r in zip(segm, reasons) if r is None]
    if not kept:
        return None, reasons[0]
    return (segm if len(kept) == len(segm) else kept), None


def polygon_problem_any(polygons, height, width):
    """The first reason any of `polygons` is unusable, or None."""
    return next((r for r in (polygon_problem(p, height, width) for p in polygons) if r), None)


def _image_size_problem(img):
    h, w = img.get("height"), img.get("width")
    if not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) and v > 0 for v in (h, w)):
        return f"width / height ({w!r}, {h!r}) are not positive integers"
    return None


def validate_coco_dict(data, json_file, bad_annotations="drop"):
    """Check every record of a loaded COCO instances file.

    Args:
        data (dict): the parsed JSON (`images`, `annotations`, `categories`).
        json_file (str): its path, for messages.
        bad_annotations (str): "drop": annotations with a bad geometry
            (bbox, polygon, RLE, empty segmentation) are removed; "error":
            they raise, and so does a missing `area` / `iscrowd` /
            `segmentation` (what pycocotools' COCOeval needs: use it for
            datasets that are evaluated).

    Returns:
        (dict, collections.Counter): `data` (the same object when nothing was
        changed, else a shallow copy with the kept annotations) and the number
        of dropped annotations per reason (`POLYGONS_REMOVED`: annotations
        kept without their unusable polygons).

    Raises:
        ValueError: one line naming the file, the record and the problem, for
            what cannot be dropped: duplicate image / annotation ids, an image
            without a valid size, an annotation of an unknown image, and, with
            "error", any bad annotation.
    """
    if bad_annotations not in ("drop", "error"):
        raise ValueError(f"bad_annotations must be 'drop' or 'error', got {bad_annotations!r}")
    images = {}
    for i, img in enumerate(data["images"]):
        prev = images.get(img["id"])
        if prev is not None:
            raise ValueError(
                f"{json_file}: duplicate image id {img['id']!r}: images {prev.get('file_name')!r} and "
                f"{img.get('file_name')!r} (image ids must be unique, else annotations land on the wrong image)"
            )
        reason = _image_size_problem(img)
        if reason:
            raise ValueError(f"{json_file}: images[{i}] ({img.get('file_name')!r}): {reason}")
        images[img["id"]] = img

    kept, dropped, ann_ids = [], collections.Counter(), set()
    for i, ann in enumerate(data.get("annotations", [])):
        where = f"{json_file}: annotations[{i}] (id {ann.get('id')!r})"
        if "id" in ann:
            if ann["id"] in ann_ids:
                raise ValueError(f"{where}: duplicate annotation id")
            ann_ids.add(ann["id"])
        img = images.get(ann["image_id"])
        if img is None:
            raise ValueError(f"{where}: image_id {ann['image_id']!r} is not in 'images'")
        where += f" of image {img.get('file_name')!r}"
        if bad_annotations == "error":
            missing = [k for k in EVAL_REQUIRED_FIELDS if k not in ann]
            if missing:
                raise ValueError(
                    f"{where} lacks {', '.join(repr(k) for k in missing)} (pycocotools' COCOeval needs them)"
                )
        reason = bbox_problem(ann["bbox"])
        segm = ann.get("segmentation")
        if reason is None and "segmentation" in ann:
            segm, reason = segmentation_problem(segm, img["height"], img["width"])
            if reason is None and segm is not ann["segmentation"]:
                if bad_annotations == "error":
                    reason = polygon_problem_any(ann["segmentation"], img["height"], img["width"])
                else:
                    ann = dict(ann, segmentation=segm)  # unusable polygons removed
                    dropped[POLYGONS_REMOVED] += 1
        if reason is None:
            kept.append(ann)
            continue
        if bad_annotations == "error":
            raise ValueError(f"{where}: {reason}; fix or remove it (an evaluation needs valid ground truth)")
        dropped[reason.split(":")[0]] += 1
    if not dropped:
        return data, dropped
    return dict(data, annotations=kept), dropped
