"""COCO-format dataset registration with clear errors for bad data.

detectron2's `register_coco_instances` registers a loader that fails deep
inside pycocotools / the data loader when the data is broken. The loader
registered here (`load_checked_coco_json`) validates every record first
(`vit_adapter.data.annotations`: duplicate ids, bounded polygons / RLEs,
finite boxes), then runs detectron2's `load_coco_json`, and turns the usual
problems into one `DatasetError` naming the problem and the file: a missing
or non-COCO annotation file, an empty dataset, a missing image file, an image
that cannot be decoded or is over the pixel limit. Bad annotations are
dropped with a logged count (`bad_annotations="drop"`, for training) or stop
the load (`"error"`, for datasets that are evaluated: pycocotools re-reads
the file and must not meet them).

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

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json, register_coco_instances

from .annotations import POLYGONS_REMOVED, validate_coco_dict
from .demo_dataset import CATEGORIES, DEMO_VERSION, demo_annotation_file, generate_demo_dataset
from .image_io import read_image_or_raise

__all__ = [
    "DatasetError",
    "DEMO_DATASETS",
    "load_checked_coco_json",
    "register_checked_coco_instances",
    "check_registered_coco_datasets",
    "registered_thing_classes",
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
    """Raise a DatasetError if `json_file` is not a readable COCO instances file;
    else return its parsed content."""
    if not os.path.isfile(json_file):
        raise DatasetError(f"annotation file not found: {json_file}")
    try:
        with open(json_file) as f:
            data = json.load(f)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DatasetError(f"annotation file {json_file} is not valid JSON ({e})") from None
    except RecursionError:
        raise DatasetError(
            f"annotation file {json_file} is nested too deeply for Python's JSON decoder "
            "(COCO JSON nests at most 4 levels: images / annotations / segmentation polygons)"
        ) from None
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
    return data


def _check_image(path, decode):
    if decode:
        read_image_or_raise(path, "RGB", DatasetError)  # the reader of training / evaluation
    elif not os.path.isfile(path):
        raise DatasetError(f"image file not found: {path}")


def _validated_annotation_file(json_file, name, bad_annotations):
    """Validate `json_file` (annotations.validate_coco_dict).

    Returns:
        (str, bool): the file to give `load_coco_json` (a cleaned temporary
        copy when annotations were dropped) and whether it is temporary.
    """
    data = _diagnose_annotation_file(json_file)
    if "annotations" not in data:
        raise DatasetError(
            f"{name}: {json_file} has no 'annotations' key (an image-info file such as COCO test-dev); "
            "training and evaluation need annotations"
        )
    try:
        clean, dropped = validate_coco_dict(data, json_file, bad_annotations)
    except RecursionError:  # a field nested hundreds of levels deep
        raise DatasetError(f"{name}: {json_file} is not COCO JSON (a field is nested too deeply)") from None
    except (KeyError, TypeError, AttributeError) as e:  # a record of the wrong shape
        raise DatasetError(f"{name}: {json_file} is not COCO JSON ({type(e).__name__}: {e})") from None
    except ValueError as e:
        raise DatasetError(f"{name}: {e}") from None
    if not dropped:
        return json_file, False
    n_dropped = sum(v for k, v in dropped.items() if k != POLYGONS_REMOVED)
    logger.warning(
        f"{name}: dropped {n_dropped} of {len(data['annotations'])} annotations of {json_file} "
        f"({', '.join(f'{k}: {v}' for k, v in sorted(dropped.items()))}); see docs/robustness.md"
    )
    fd, path = tempfile.mkstemp(prefix="vit_adapter_checked_", suffix=".json")
    with os.fdopen(fd, "w") as f:
        json.dump(clean, f)
    return path, True


def load_checked_coco_json(json_file, image_root, dataset_name=None, check_images="auto", bad_annotations="drop"):
    """detectron2's `load_coco_json` plus validation and clear errors for broken data.

    Args:
        json_file (str): COCO instances annotation file.
        image_root (str): folder the images' `file_name`s are relative to.
        dataset_name (str or None): registered name (sets the metadata, as
            detectron2's `load_coco_json` does).
        check_images (str): "decode" (open and decode every image), "exists"
            (check the files exist), "none", or "auto": "decode" for at most
            `DECODE_CHECK_MAX_IMAGES` images, "exists" above.
        bad_annotations (str): "drop" (remove bad annotations, log a count per
            reason) or "error" (stop; also requires `area` / `iscrowd` /
            `segmentation`, which pycocotools' COCOeval reads). See
            `vit_adapter.data.annotations.validate_coco_dict`.

    Returns:
        list[dict]: detectron2's standard dataset dicts.

    Raises:
        DatasetError: missing / non-COCO annotation file, no images, no
            categories, no annotations, missing or corrupt image file, an
            image over the pixel limit, duplicate image ids, a bad annotation
            with `bad_annotations="error"`.
    """
    name = f"dataset '{dataset_name}'" if dataset_name else "dataset"
    if not os.path.isfile(json_file):
        raise DatasetError(f"{name}: annotation file not found: {json_file}")
    checked_file, is_temp = _validated_annotation_file(json_file, name, bad_annotations)
    try:
        dicts = load_coco_json(checked_file, image_root, dataset_name)
    except Exception as e:
        raise DatasetError(f"{name}: cannot load {json_file} ({type(e).__name__}: {e})") from e
    finally:
        if is_temp:
            os.remove(checked_file)
    if not dicts:
        _diagnose_annotation_file(json_file)  # a file that is not COCO at all gets that error
        raise DatasetError(f"{name} is empty: {json_file} lists no images")
    meta = MetadataCatalog.get(dataset_name) if dataset_name else None
    if meta is not None and not meta.get("thing_classes"):
        _diagnose_annotation_file(json_file)
        raise DatasetError(f"{name} is empty: {json_file} lists no categories")
    if not any(d.get("annotations") for d in dicts):
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


def _reregister_checked(name, json_file, image_root, check_images, bad_annotations):
    DatasetCatalog.remove(name)
    DatasetCatalog.register(
        name, partial(load_checked_coco_json, json_file, image_root, name, check_images, bad_annotations)
    )


def register_checked_coco_instances(
    name, metadata, json_file, image_root, check_images="auto", bad_annotations="drop"
):
    """`register_coco_instances` with the checks of `load_checked_coco_json`.

    Same arguments as detectron2's `register_coco_instances`, plus
    `check_images` and `bad_annotations` (see `load_checked_coco_json`; use
    "error" for a dataset you evaluate on). Registering a name again replaces
    the previous registration.
    """
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    register_coco_instances(name, metadata, json_file, image_root)
    _reregister_checked(name, json_file, image_root, check_images, bad_annotations)


def check_registered_coco_datasets(names, check_images="auto", eval_names=()):
    """Give already-registered COCO datasets the checked loader.

    Args:
        names (str or list[str]): datasets to check (bad annotations dropped).
        check_images (str): see `load_checked_coco_json`.
        eval_names (list[str]): those of `names` that are evaluated: a bad
            annotation stops their load (`bad_annotations="error"`), since
            COCOEvaluator hands the original file to pycocotools. Their
            annotation files are validated here, at once.

    Names that are not registered, or not COCO instances datasets (no
    `json_file` / `image_root` metadata), are left alone.
    """
    if isinstance(names, str):
        names = [names]
    registered = set(DatasetCatalog.list())
    for name in names:
        if name not in registered:
            continue
        meta = MetadataCatalog.get(name)
        if meta.get("evaluator_type") != "coco" or not meta.get("json_file") or not meta.get("image_root"):
            continue
        mode = "error" if name in eval_names else "drop"
        if mode == "error" and os.path.isfile(meta.json_file):
            # COCOEvaluator hands this file to pycocotools: validate it now (also when
            # the dataset's own loader drops bad records), not after a whole training run
            _validated_annotation_file(meta.json_file, f"dataset '{name}'", mode)
        if not _is_checked(DatasetCatalog[name]):
            _reregister_checked(name, meta.json_file, meta.image_root, check_images, mode)


def registered_thing_classes(name):
    """Class names of the registered dataset `name`, without loading its records:
    its metadata's `thing_classes`, else the categories (sorted by id, as
    detectron2's `load_coco_json`) of its COCO `json_file`.

    Returns:
        list[str] or None: None when `name` is not registered or its classes are
        not known before loading (not a COCO dataset).

    Raises:
        DatasetError: the COCO annotation file is missing or not COCO JSON.
    """
    if name not in DatasetCatalog.list():
        return None
    meta = MetadataCatalog.get(name)
    classes = meta.get("thing_classes")
    if classes:
        return list(classes)
    json_file = meta.get("json_file")
    if not json_file:
        return None
    categories = _diagnose_annotation_file(json_file)["categories"]
    try:
        categories = sorted(categories, key=lambda c: c["id"])
        return [str(c["name"]) for c in categories]
    except (KeyError, TypeError) as e:
        raise DatasetError(
            f"dataset '{name}': {json_file} is not COCO JSON: its categories need an 'id' and a 'name' "
            f"({type(e).__name__}: {e})"
        ) from None


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
