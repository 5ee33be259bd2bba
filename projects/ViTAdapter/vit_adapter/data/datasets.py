"""COCO-format dataset registration with clear errors for bad data.

detectron2's `register_coco_instances` registers a loader that fails deep
inside pycocotools / the data loader when the data is broken. The loader
registered here (`load_checked_coco_json`) runs detectron2's `load_coco_json`
and turns the usual problems into one `DatasetError` naming the problem and
the file: a missing or non-COCO annotation file, an empty dataset, a missing
image file, an image that cannot be decoded.

    from vit_adapter.data import register_checked_coco_instances
    register_checked_coco_instances("my_train", {}, "path/instances.json", "path/images")

`check_registered_coco_datasets(names)` swaps the same checks into datasets
that are already registered as COCO (detectron2's builtin `coco_2017_*`,
or yours via `register_coco_instances`).
"""
import json
import logging
import os
import shutil
import tempfile
from functools import partial

from PIL import Image

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json, register_coco_instances

from .demo_dataset import CATEGORIES, DEMO_VERSION, demo_annotation_file, generate_demo_dataset

__all__ = [
    "DatasetError",
    "DEMO_DATASETS",
    "load_checked_coco_json",
    "register_checked_coco_instances",
    "check_registered_coco_datasets",
    "register_demo_dataset",
    "prepare_demo_dataset",
    "default_demo_root",
]

logger = logging.getLogger(__name__)

# Datasets of at most this many images are fully decoded when loaded; larger
# ones (COCO: 118k images) only get an existence check.
DECODE_CHECK_MAX_IMAGES = 2000
DEMO_DATASETS = {"train": "vit_adapter_demo_train", "val": "vit_adapter_demo_val"}


class DatasetError(ValueError):
    """The data of a registered dataset is missing or malformed."""


def _diagnose_annotation_file(json_file):
    """Raise a DatasetError if `json_file` is not a readable COCO instances file."""
    if not os.path.isfile(json_file):
        raise DatasetError(f"annotation file not found: {json_file}")
    try:
        with open(json_file) as f:
            data = json.load(f)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DatasetError(f"annotation file {json_file} is not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise DatasetError(
            f"annotation file {json_file} is not COCO JSON: expected an object with "
            f"'images', 'annotations' and 'categories', got a {type(data).__name__}"
        )
    missing = [k for k in ("images", "categories") if not isinstance(data.get(k), list)]
    if missing:
        raise DatasetError(
            f"annotation file {json_file} is not COCO JSON: missing or invalid "
            f"key(s) {', '.join(repr(k) for k in missing)}"
        )
    for key, fields in (("images", ("id", "file_name")), ("annotations", ("image_id", "category_id", "bbox"))):
        for i, item in enumerate(data.get(key, [])):
            absent = [k for k in fields if not isinstance(item, dict) or k not in item]
            if absent:
                raise DatasetError(
                    f"annotation file {json_file} is not COCO JSON: {key}[{i}] lacks {', '.join(absent)}"
                )


def _check_image(path, decode):
    if not os.path.isfile(path):
        raise DatasetError(f"image file not found: {path}")
    if decode:
        try:
            with Image.open(path) as im:
                im.load()
        except Exception as e:  # PIL raises several types for bad files
            raise DatasetError(f"image file {path} is corrupt or not an image ({e})") from None


def load_checked_coco_json(json_file, image_root, dataset_name=None, check_images="auto"):
    """detectron2's `load_coco_json` plus clear errors for broken data.

    Args:
        json_file (str): COCO instances annotation file.
        image_root (str): folder the images' `file_name`s are relative to.
        dataset_name (str or None): registered name (sets the metadata, as
            detectron2's `load_coco_json` does).
        check_images (str): "decode" (open and decode every image), "exists"
            (check the files exist), "none", or "auto": "decode" for at most
            `DECODE_CHECK_MAX_IMAGES` images, "exists" above.

    Returns:
        list[dict]: detectron2's standard dataset dicts.

    Raises:
        DatasetError: missing / non-COCO annotation file, no images, no
            categories, no annotations, missing or corrupt image file.
    """
    name = f"dataset '{dataset_name}'" if dataset_name else "dataset"
    if not os.path.isfile(json_file):
        raise DatasetError(f"{name}: annotation file not found: {json_file}")
    try:
        dicts = load_coco_json(json_file, image_root, dataset_name)
    except Exception as e:
        _diagnose_annotation_file(json_file)  # raises the clear error when it finds one
        raise DatasetError(f"{name}: cannot load {json_file} ({type(e).__name__}: {e})") from e
    if not dicts:
        _diagnose_annotation_file(json_file)  # a file that is not COCO at all gets that error
        raise DatasetError(f"{name} is empty: {json_file} lists no images")
    meta = MetadataCatalog.get(dataset_name) if dataset_name else None
    if meta is not None and not meta.get("thing_classes"):
        _diagnose_annotation_file(json_file)
        raise DatasetError(f"{name} is empty: {json_file} lists no categories")
    if not any(d.get("annotations") for d in dicts):
        with open(json_file) as f:
            has_key = "annotations" in json.load(f)
        if has_key:  # an image-info file (COCO test-dev) has no 'annotations' key at all
            raise DatasetError(f"{name} is empty: {json_file} has no annotations")
    if check_images == "auto":
        check_images = "decode" if len(dicts) <= DECODE_CHECK_MAX_IMAGES else "exists"
    if check_images not in ("decode", "exists", "none"):
        raise ValueError(f"check_images must be 'auto', 'decode', 'exists' or 'none', got {check_images!r}")
    if check_images != "none":
        for d in dicts:
            _check_image(d["file_name"], decode=check_images == "decode")
    return dicts


def _is_checked(loader):
    """Whether a DatasetCatalog loader is one registered here (already checks its data)."""
    return isinstance(loader, partial) and loader.func in (load_checked_coco_json, _load_demo_split)


def _reregister_checked(name, json_file, image_root, check_images):
    DatasetCatalog.remove(name)
    DatasetCatalog.register(
        name, partial(load_checked_coco_json, json_file, image_root, name, check_images)
    )


def register_checked_coco_instances(name, metadata, json_file, image_root, check_images="auto"):
    """`register_coco_instances` with the checks of `load_checked_coco_json`.

    Same arguments as detectron2's `register_coco_instances`, plus
    `check_images` (see `load_checked_coco_json`). Registering a name again
    replaces the previous registration.
    """
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    register_coco_instances(name, metadata, json_file, image_root)
    _reregister_checked(name, json_file, image_root, check_images)


def check_registered_coco_datasets(names, check_images="auto"):
    """Give already-registered COCO datasets the checked loader.

    Names that are not registered, or not COCO instances datasets (no
    `json_file` / `image_root` metadata), are left alone.
    """
    if isinstance(names, str):
        names = [names]
    registered = set(DatasetCatalog.list())
    for name in names:
        if name not in registered or _is_checked(DatasetCatalog[name]):
            continue
        meta = MetadataCatalog.get(name)
        if meta.get("evaluator_type") != "coco" or not meta.get("json_file") or not meta.get("image_root"):
            continue
        _reregister_checked(name, meta.json_file, meta.image_root, check_images)


def default_demo_root():
    """`$DETECTRON2_DATASETS/vit_adapter_demo` (detectron2's dataset root convention)."""
    return os.path.join(os.path.expanduser(os.getenv("DETECTRON2_DATASETS", "datasets")), "vit_adapter_demo")


def _load_demo_split(root, split, name, generator_kwargs):
    prepare_demo_dataset(root, **generator_kwargs)
    return load_checked_coco_json(demo_annotation_file(root, split), os.path.join(root, split), name)


def register_demo_dataset(root=None, names=None, **generator_kwargs):
    """Register the demo dataset's splits as checked COCO datasets, generated on first use.

    Nothing is read or written here: the first `DatasetCatalog.get` of a
    split generates the dataset under `root` (`prepare_demo_dataset`: only
    when missing or made with other arguments), then loads it with the checks
    of `load_checked_coco_json`. Configs call this at load time (see
    configs/demo/), so any LazyConfig tool, detectron2's own
    `tools/lazyconfig_train_net.py` included, finds the datasets registered.
    Registering again replaces the previous registration.

    Args:
        root (str or None): dataset folder; `default_demo_root()` when None.
        names (dict or None): split -> dataset name; `DEMO_DATASETS` when None.
        generator_kwargs: arguments of `generate_demo_dataset` (num_train,
            num_val, image_size, seed, min_objects, max_objects).

    Returns:
        dict: split -> registered name.
    """
    root = default_demo_root() if root is None else root
    names = DEMO_DATASETS if names is None else names
    # Class names are known without reading the files (visualisation needs them).
    meta = {"thing_classes": [c["name"] for c in CATEGORIES]}
    for split, name in names.items():
        register_checked_coco_instances(
            name, dict(meta), demo_annotation_file(root, split), os.path.join(root, split)
        )
        DatasetCatalog.remove(name)
        DatasetCatalog.register(name, partial(_load_demo_split, root, split, name, dict(generator_kwargs)))
    return dict(names)


def _stamp_matches(root, stamp):
    try:
        with open(os.path.join(root, "demo_dataset.json")) as f:
            return json.load(f) == stamp
    except (OSError, ValueError):
        return False


def prepare_demo_dataset(root=None, **generator_kwargs):
    """Generate the demo dataset under `root` unless an identical copy is there.

    A stamp file (`root/demo_dataset.json`) records the generator arguments
    and `DEMO_VERSION`; the dataset is (re)generated when it is missing or
    differs, so a cached copy is reused only when it is byte-identical to
    what the arguments would produce.

    Args:
        root (str or None): output folder; `default_demo_root()` when None.
        generator_kwargs: arguments of `generate_demo_dataset` (num_train,
            num_val, image_size, seed, min_objects, max_objects).

    Returns:
        str: the dataset root (pass it to `register_demo_dataset`).
    """
    root = default_demo_root() if root is None else root
    stamp = {"version": DEMO_VERSION, **{k: generator_kwargs[k] for k in sorted(generator_kwargs)}}
    if _stamp_matches(root, stamp):
        return root
    logger.info(f"Generating the demo dataset in {root} ({generator_kwargs or 'defaults'}) ...")
    # Written aside, then renamed into place: processes that generate at the same time
    # (one per rank) never read a half-written copy; the first rename wins.
    parent = os.path.dirname(os.path.abspath(root))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(root)}.", dir=parent)
    try:
        generate_demo_dataset(tmp, **generator_kwargs)
        with open(os.path.join(tmp, "demo_dataset.json"), "w") as f:
            json.dump(stamp, f)
        if not _stamp_matches(root, stamp):
            if os.path.exists(root):
                shutil.rmtree(root)  # made with other arguments
            try:
                os.rename(tmp, root)
            except OSError:  # another process renamed its copy first
                if not _stamp_matches(root, stamp):
                    raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root
