"""A small, deterministic COCO-format instance-segmentation dataset of shapes.

`generate_demo_dataset(root)` writes::

    root/train/000000.jpg ...          (RGB JPEG images)
    root/val/000000.jpg ...
    root/annotations/instances_train.json, instances_val.json   (COCO JSON)

Every image is a textured background (stripes, checkerboard or smooth noise in
random colours) with a few coloured shapes (`CATEGORIES`: circle, square,
triangle) that may occlude each other. Annotations are COCO polygons of the
*visible* part of each shape (one polygon per instance), with `bbox` and
`area` computed from the visible mask. The output depends only on the
arguments (`seed` in particular): the same call writes byte-identical files.
"""
import json
import os

import contourpy  # installed with matplotlib, which detectron2 requires
import numpy as np
from PIL import Image, ImageDraw

__all__ = ["CATEGORIES", "DEMO_VERSION", "generate_demo_dataset", "demo_annotation_file"]

CATEGORIES = [
    {"id": 1, "name": "circle", "supercategory": "shape"},
    {"id": 2, "name": "square", "supercategory": "shape"},
    {"id": 3, "name": "triangle", "supercategory": "shape"},
]
# Bump when the generated content changes, so that cached copies are regenerated.
DEMO_VERSION = 1
_SPLIT_SEEDS = {"train": 0, "val": 1}


def demo_annotation_file(root, split):
    """Path of the COCO JSON of `split` ("train" or "val") under `root`."""
    return os.path.join(root, "annotations", f"instances_{split}.json")


def _background(rng, size):
    """(size, size, 3) float texture in two random colours plus pixel noise."""
    c0, c1 = rng.uniform(0, 255, size=(2, 3))
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    kind = rng.integers(3)
    if kind == 0:  # stripes at a random angle and period
        theta, period = rng.uniform(0, np.pi), rng.uniform(8, 40)
        t = 0.5 + 0.5 * np.sin(2 * np.pi * (xx * np.cos(theta) + yy * np.sin(theta)) / period)
    elif kind == 1:  # checkerboard
        cell = int(rng.integers(8, 40))
        t = ((xx // cell + yy // cell) % 2).astype(np.float32)
    else:  # smooth noise: a coarse random grid upsampled bilinearly
        g = int(rng.integers(3, 8))
        coarse = Image.fromarray((rng.uniform(0, 255, size=(g, g))).astype(np.uint8))
        t = np.asarray(coarse.resize((size, size), Image.BILINEAR), dtype=np.float32) / 255.0
    img = c0 + (c1 - c0) * t[..., None]
    img += rng.normal(0, 8, size=img.shape)
    return img


def _shape_polygon(rng, category, cx, cy, radius):
    """Vertices [(x, y), ...] of a shape; circles are 48-gons."""
    if category == "circle":
        n, phase = 48, 0.0
    elif category == "square":
        n, phase = 4, rng.uniform(0, np.pi / 2)
    else:
        n, phase = 3, rng.uniform(0, 2 * np.pi / 3)
    angles = phase + 2 * np.pi * np.arange(n) / n
    return [(cx + radius * np.cos(a), cy + radius * np.sin(a)) for a in angles]


def _rasterize(polygon, size):
    mask = Image.new("L", (size, size), 0)
    ImageDraw.Draw(mask).polygon(polygon, fill=1)
    return np.asarray(mask, dtype=bool)


def _mask_to_polygons(mask):
    """Outer contours of a binary mask as COCO polygons (pixel-edge coordinates)."""
    padded = np.pad(mask.astype(np.float32), 1)
    lines = contourpy.contour_generator(z=padded, line_type="Separate").lines(0.5)
    polygons = []
    for line in lines:
        pts = line[:-1] - 0.5  # drop the repeated end point; undo the padding, +0.5 to pixel edges
        keep = np.ones(len(pts), dtype=bool)  # drop points on a straight segment
        prev, nxt = np.roll(pts, 1, axis=0), np.roll(pts, -1, axis=0)
        cross = (pts[:, 0] - prev[:, 0]) * (nxt[:, 1] - pts[:, 1]) - (pts[:, 1] - prev[:, 1]) * (
            nxt[:, 0] - pts[:, 0]
        )
        keep &= np.abs(cross) > 1e-6
        pts = pts[keep]
        if len(pts) >= 3:
            polygons.append([round(float(v), 2) for v in pts.reshape(-1)])
    return polygons


def _render_image(rng, size, min_objects, max_objects):
    """One image and its instances [(category_id, visible_mask, polygon)]."""
    img = _background(rng, size)
    objects = []  # [category_id, full_mask, colour], in drawing order (last on top)
    for _ in range(int(rng.integers(min_objects, max_objects + 1))):
        for _attempt in range(20):
            cat = CATEGORIES[int(rng.integers(len(CATEGORIES)))]
            radius = rng.uniform(0.07, 0.2) * size
            cx, cy = rng.uniform(radius * 0.8, size - radius * 0.8, size=2)
            mask = _rasterize(_shape_polygon(rng, cat["name"], cx, cy, radius), size)
            # Accept only if every shape below stays mostly visible and in one piece.
            ok = True
            for i, obj in enumerate(objects):
                visible = obj[1] & ~mask
                for other in objects[i + 1 :]:
                    visible &= ~other[1]
                if visible.sum() < 0.5 * obj[1].sum() or len(_mask_to_polygons(visible)) != 1:
                    ok = False
                    break
            if ok:
                colour = rng.uniform(0, 255, size=3)
                objects.append([cat["id"], mask, colour])
                break
    instances = []
    for i, (cat_id, mask, colour) in enumerate(objects):
        shade = np.linspace(0.8, 1.15, size, dtype=np.float32)[:, None, None]  # vertical shading
        img = np.where(mask[..., None], colour * shade + rng.normal(0, 4, size=img.shape), img)
        visible = mask.copy()
        for other in objects[i + 1 :]:
            visible &= ~other[1]
        instances.append((cat_id, visible, _mask_to_polygons(visible)[0]))
    return np.clip(img, 0, 255).astype(np.uint8), instances


def _write_split(root, split, num_images, image_size, seed, min_objects, max_objects):
    os.makedirs(os.path.join(root, split), exist_ok=True)
    images, annotations = [], []
    for idx in range(num_images):
        rng = np.random.default_rng([seed, _SPLIT_SEEDS[split], idx])
        pixels, instances = _render_image(rng, image_size, min_objects, max_objects)
        file_name = f"{idx:06d}.jpg"
        Image.fromarray(pixels).save(os.path.join(root, split, file_name), quality=92)
        images.append({"id": idx + 1, "file_name": file_name, "width": image_size, "height": image_size})
        for cat_id, visible, polygon in instances:
            ys, xs = np.nonzero(visible)
            x0, y0 = int(xs.min()), int(ys.min())
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": idx + 1,
                    "category_id": cat_id,
                    "segmentation": [polygon],
                    "area": float(visible.sum()),
                    "bbox": [x0, y0, int(xs.max()) + 1 - x0, int(ys.max()) + 1 - y0],
                    "iscrowd": 0,
                }
            )
    coco = {
        "info": {
            "description": "vit_adapter demo shapes",
            "version": DEMO_VERSION,
            "seed": seed,
            "image_size": image_size,
            "split": split,
        },
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": CATEGORIES,
    }
    json_file = demo_annotation_file(root, split)
    os.makedirs(os.path.dirname(json_file), exist_ok=True)
    with open(json_file, "w") as f:
        json.dump(coco, f, separators=(",", ":"))
    return json_file


def generate_demo_dataset(
    root,
    num_train=400,
    num_val=100,
    image_size=256,
    seed=0,
    min_objects=2,
    max_objects=6,
):
    """Write the demo dataset under `root` (see the module docstring).

    Args:
        root (str): output folder (created if missing; existing files are overwritten).
        num_train (int): number of training images.
        num_val (int): number of validation images.
        image_size (int): side of the square images, in pixels.
        seed (int): the only source of randomness; image i of a split depends only
            on (seed, split, i).
        min_objects (int), max_objects (int): shapes per image (fewer when a shape
            cannot be placed without hiding more than half of another one).

    Returns:
        dict: split name -> (annotation json path, image folder).
    """
    if num_train < 1 or num_val < 1:
        raise ValueError(f"the demo dataset needs at least one image per split, got {num_train}/{num_val}")
    if image_size < 64:
        raise ValueError(f"image_size must be >= 64, got {image_size}")
    out = {}
    for split, n in (("train", num_train), ("val", num_val)):
        json_file = _write_split(root, split, n, image_size, seed, min_objects, max_objects)
        out[split] = (json_file, os.path.join(root, split))
    return out
