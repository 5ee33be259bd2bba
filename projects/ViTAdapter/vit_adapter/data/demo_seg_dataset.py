"""A small, deterministic semantic-segmentation dataset of shapes (per-pixel PNG labels).

`generate_demo_seg_dataset(root)` writes::

    root/images/{train,val}/000000.jpg ...      RGB JPEG images
    root/labels/{train,val}/000000.png ...      8-bit label PNGs (class indices)

Every image is a background of smooth two-colour noise with 1-4 shapes (the
instance demo's polygons, vit_adapter.data.demo_dataset) that may occlude each
other: circles filled with a shaded colour, squares with stripes of 3 px
bands, triangles with a checkerboard of 4 px cells, colours random. A class is its geometry and its
fill pattern, never its colour, so a model trained from scratch on a CPU
learns it in minutes. Labels: 0 background, 1 circle, 2 square, 3 triangle
(`SEG_CLASSES`), and `IGNORE_VALUE` (255) on a band of `ignore_width` pixels
along every shape's outline (the Pascal VOC convention for uncertain
boundaries). Same arguments, byte-identical files.

`register_demo_seg_dataset` registers both splits as checked
semantic-segmentation datasets (vit_adapter.data.sem_seg), generated on first
use under $DETECTRON2_DATASETS/vit_adapter_demo_seg.
"""
import json
import logging
import os
import shutil
import tempfile
from functools import partial

import numpy as np
from PIL import Image

from detectron2.data import DatasetCatalog, MetadataCatalog

from .demo_dataset import CATEGORIES, _rasterize, _shape_polygon
from .sem_seg import load_checked_sem_seg

__all__ = [
    "DEMO_SEG_DATASETS",
    "IGNORE_VALUE",
    "SEG_CLASSES",
    "default_demo_seg_root",
    "generate_demo_seg_dataset",
    "prepare_demo_seg_dataset",
    "register_demo_seg_dataset",
]

logger = logging.getLogger(__name__)

SEG_CLASSES = ["background"] + [c["name"] for c in CATEGORIES]
IGNORE_VALUE = 255
DEMO_SEG_DATASETS = {"train": "vit_adapter_demo_seg_train", "val": "vit_adapter_demo_seg_val"}
# Bump when the generated content changes, so that cached copies are regenerated.
DEMO_SEG_VERSION = 3
_SPLIT_SEEDS = {"train": 0, "val": 1}


def _outline(mask: np.ndarray, width: int) -> np.ndarray:
    """Pixels within `width` (chessboard distance) of the mask's boundary, on both sides
    (the image border is not a boundary: the mask is edge-padded)."""
    padded = np.pad(mask, width, mode="edge")
    grown, shrunk = padded.copy(), padded.copy()
    for _ in range(width):
        g, s = grown.copy(), shrunk.copy()
        for dy, dx in ((1, 0), (-1, 0), (0, 1), (0, -1), (1, 1), (1, -1), (-1, 1), (-1, -1)):
            shifted_g = np.roll(np.roll(grown, dy, 0), dx, 1)
            shifted_s = np.roll(np.roll(shrunk, dy, 0), dx, 1)
            g |= shifted_g
            s &= shifted_s
        grown, shrunk = g, s
    return (grown & ~shrunk)[width:-width, width:-width]


def _background(rng, size: int) -> np.ndarray:
    """(size, size, 3) smooth noise in two random colours plus pixel noise (no stripes or
    checkerboards: those are the shapes' fills)."""
    c0, c1 = rng.uniform(0, 255, size=(2, 3))
    g = int(rng.integers(3, 8))
    coarse = Image.fromarray(rng.uniform(0, 255, size=(g, g)).astype(np.uint8))
    t = np.asarray(coarse.resize((size, size), Image.BILINEAR), dtype=np.float32) / 255.0
    return c0 + (c1 - c0) * t[..., None] + rng.normal(0, 8, size=(size, size, 3))


def _fill(rng, name: str, size: int) -> np.ndarray:
    """(size, size, 3) fill of a shape class: shaded colour (circle), stripes of 3 px bands
    (square), checkerboard of 4 px cells (triangle); the two colours of a pattern differ
    by at least 100 in every channel, so JPEG keeps the pattern."""
    c0 = rng.uniform(0, 155, size=3)
    c1 = c0 + rng.uniform(100, 255 - c0)
    if rng.integers(2):
        c0, c1 = c1, c0
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    if name == "circle":
        t = np.linspace(0.0, 1.0, size, dtype=np.float32)[:, None].repeat(size, 1) * 0.3
    elif name == "square":
        theta = rng.uniform(0, np.pi)
        t = (np.floor((xx * np.cos(theta) + yy * np.sin(theta)) / 3.0) % 2).astype(np.float32)
    else:
        t = ((xx // 4 + yy // 4) % 2).astype(np.float32)
    return c0 + (c1 - c0) * t[..., None] + rng.normal(0, 4, size=(size, size, 3))


def _render(rng, size: int, min_objects: int, max_objects: int):
    """One image and its shapes [(category_id, visible mask)], last drawn on top."""
    img = _background(rng, size)
    masks = []
    for _ in range(int(rng.integers(min_objects, max_objects + 1))):
        for _attempt in range(20):
            cat = CATEGORIES[int(rng.integers(len(CATEGORIES)))]
            radius = rng.uniform(0.12, 0.3) * size
            cx, cy = rng.uniform(radius * 0.8, size - radius * 0.8, size=2)
            mask = _rasterize(_shape_polygon(rng, cat["name"], cx, cy, radius), size)
            # every shape below must stay mostly visible
            if all((m & ~mask).sum() >= 0.5 * m.sum() for _, m in masks):
                img = np.where(mask[..., None], _fill(rng, cat["name"], size), img)
                masks = [(c, m & ~mask) for c, m in masks] + [(cat["id"], mask)]
                break
    return np.clip(img, 0, 255).astype(np.uint8), masks


def _render_label(instances, size: int, ignore_width: int) -> np.ndarray:
    label = np.zeros((size, size), dtype=np.uint8)
    for cat_id, visible in instances:
        label[visible] = cat_id
    if ignore_width > 0:
        edge = np.zeros((size, size), dtype=bool)
        for _, visible in instances:
            edge |= _outline(visible, ignore_width)
        label[edge] = IGNORE_VALUE
    return label


def generate_demo_seg_dataset(
    root, num_train=400, num_val=100, image_size=128, seed=0, min_objects=1, max_objects=4, ignore_width=1
):
    """Write the dataset under `root` (see the module docstring).

    Args:
        root (str): output folder (created; existing files overwritten).
        num_train (int), num_val (int): images per split.
        image_size (int): side of the square images (>= 64).
        seed (int): the only source of randomness.
        min_objects (int), max_objects (int): shapes per image.
        ignore_width (int): width of the ignored band along outlines (0: none).

    Returns:
        dict: split -> (image folder, label folder).
    """
    if num_train < 1 or num_val < 1:
        raise ValueError(f"the demo dataset needs at least one image per split, got {num_train}/{num_val}")
    if image_size < 64:
        raise ValueError(f"image_size must be >= 64, got {image_size}")
    out = {}
    for split, n in (("train", num_train), ("val", num_val)):
        img_dir, lab_dir = os.path.join(root, "images", split), os.path.join(root, "labels", split)
        os.makedirs(img_dir, exist_ok=True)
        os.makedirs(lab_dir, exist_ok=True)
        for idx in range(n):
            rng = np.random.default_rng([seed, _SPLIT_SEEDS[split], idx, 7])
            pixels, instances = _render(rng, image_size, min_objects, max_objects)
            Image.fromarray(pixels).save(os.path.join(img_dir, f"{idx:06d}.jpg"), quality=92, subsampling=0)
            label = _render_label(instances, image_size, ignore_width)
            Image.fromarray(label, mode="L").save(os.path.join(lab_dir, f"{idx:06d}.png"))
        out[split] = (img_dir, lab_dir)
    return out


def default_demo_seg_root():
    """`$DETECTRON2_DATASETS/vit_adapter_demo_seg` (default ./datasets)."""
    return os.path.join(os.path.expanduser(os.getenv("DETECTRON2_DATASETS", "datasets")), "vit_adapter_demo_seg")


def _stamp_matches(root, stamp):
    try:
        with open(os.path.join(root, "demo_seg_dataset.json")) as f:
            return json.load(f) == stamp
    except (OSError, ValueError):
        return False


def prepare_demo_seg_dataset(root=None, **generator_kwargs):
    """Generate the dataset under `root` unless an identical copy is there (a stamp
    file records the arguments); written aside and renamed into place, so
    concurrent processes never read a half-written copy. Returns the root."""
    root = default_demo_seg_root() if root is None else root
    stamp = {"version": DEMO_SEG_VERSION, **{k: generator_kwargs[k] for k in sorted(generator_kwargs)}}
    if _stamp_matches(root, stamp):
        return root
    logger.info(f"Generating the demo segmentation dataset in {root} ({generator_kwargs or 'defaults'}) ...")
    parent = os.path.dirname(os.path.abspath(root))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(root)}.", dir=parent)
    try:
        generate_demo_seg_dataset(tmp, **generator_kwargs)
        with open(os.path.join(tmp, "demo_seg_dataset.json"), "w") as f:
            json.dump(stamp, f)
        if not _stamp_matches(root, stamp):
            if os.path.exists(root):
                shutil.rmtree(root)
            try:
                os.rename(tmp, root)
            except OSError:
                if not _stamp_matches(root, stamp):
                    raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root


def _load_split(root, split, name, generator_kwargs):
    prepare_demo_seg_dataset(root, **generator_kwargs)
    return load_checked_sem_seg(
        os.path.join(root, "images", split), os.path.join(root, "labels", split), len(SEG_CLASSES),
        IGNORE_VALUE, name,
    )


def register_demo_seg_dataset(root=None, names=None, **generator_kwargs):
    """Register the splits (generated at the first `DatasetCatalog.get`, then
    loaded with the checks of `load_checked_sem_seg`). Returns split -> name."""
    root = default_demo_seg_root() if root is None else root
    names = DEMO_SEG_DATASETS if names is None else names
    for split, name in names.items():
        if name in DatasetCatalog.list():
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)
        DatasetCatalog.register(name, partial(_load_split, root, split, name, dict(generator_kwargs)))
        MetadataCatalog.get(name).set(
            stuff_classes=list(SEG_CLASSES),
            stuff_colors=[(40, 40, 40), (230, 25, 75), (60, 180, 75), (0, 130, 200)],
            ignore_label=IGNORE_VALUE,
            evaluator_type="sem_seg",
            image_root=os.path.join(root, "images", split),
            sem_seg_root=os.path.join(root, "labels", split),
        )
    return dict(names)
