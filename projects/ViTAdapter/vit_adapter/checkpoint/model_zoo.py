"""ViT-Adapter model zoo: name -> (config, checkpoint URL or path, sha256, reported AP).

Load by name, ``vit_adapter://<name>`` or URL anywhere detectron2 takes a
checkpoint path (``train.init_checkpoint``, ``--eval-only``)::

    python train_net.py --config-file configs/COCO/mask_rcnn_vit_adapter_t_3x_ms.py --eval-only \\
        train.init_checkpoint=vit_adapter://mask_rcnn_vit_adapter_t_3x_ms

:class:`vit_adapter.checkpoint.checkpointer.ViTAdapterCheckpointer` resolves the name,
downloads through detectron2's ``PathManager`` (cached under
``$FVCORE_CACHE``), verifies the sha256 when it is known, and converts
official mmdetection checkpoints on the fly. ``vit_adapter://`` is also a
registered iopath handler, so ``PathManager.get_local_path("vit_adapter://...")``
works in any detectron2 code.

The official entries are the COCO checkpoints of the release
(czczup/ViT-Adapter, ``detection/README.md`` and ``detection/configs/*/README.md``)
with the box / mask AP reported there. Their sha256 is not published, so it
is None (not verified) until someone records it (``sha256sum FILE``). Your own checkpoints: ``register(...)`` in code,
or a JSON list of entries in the file named by ``$VIT_ADAPTER_MODEL_ZOO``
(``tools/publish_checkpoint.py`` prints the entry).
"""
import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional, Tuple

from iopath.common.file_io import PathHandler

__all__ = [
    "ChecksumError",
    "ModelZooEntry",
    "PREFIX",
    "get",
    "get_checkpoint_url",
    "get_config_file",
    "get_local_path",
    "list_models",
    "register",
    "resolve",
    "sha256sum",
    "verify_sha256",
]

PREFIX = "vit_adapter://"
MODEL_ZOO_ENV = "VIT_ADAPTER_MODEL_ZOO"
from vit_adapter import REPO_ROOT as _REPO_ROOT


class ChecksumError(ValueError):
    """A downloaded / local checkpoint does not have the registered sha256."""


@dataclass(frozen=True)
class ModelZooEntry:
    """One model-zoo row.

    Attributes:
        name (str): registry key (``vit_adapter://<name>``).
        config (str): LazyConfig file, relative to the repository root.
        url (str): checkpoint URL or local path.
        sha256 (str or None): hex digest of the file; None = unknown (not verified).
        box_ap, mask_ap (float or None): COCO val2017 AP reported for it.
        source (str): "official" (czczup/ViT-Adapter release, mmdetection
            format, converted when loaded) or "ours" (detectron2 format).
        notes (str): anything a user must know (deviations, provenance).
    """

    name: str
    config: str
    url: str
    sha256: Optional[str] = None
    box_ap: Optional[float] = None
    mask_ap: Optional[float] = None
    source: str = "ours"
    notes: str = ""
    extra: Dict[str, str] = field(default_factory=dict, compare=False)

    def table_row(self) -> str:
        """The MODEL_ZOO.md table row of this entry."""
        ap = lambda v: "-" if v is None else f"{v:.1f}"  # noqa: E731
        sha = f"`{self.sha256[:12]}`" if self.sha256 else "unknown"
        return (
            f"| {self.name} | [{os.path.basename(self.config)}]({self.config}) | {ap(self.box_ap)} | "
            f"{ap(self.mask_ap)} | [{os.path.basename(self.url)}]({self.url}) | {sha} | {self.source} |"
        )


_GH = "https://github.com/czczup/ViT-Adapter/releases/download"
_HF = "https://huggingface.co/czczup/ViT-Adapter/resolve/main"
_CASCADE_NOTE = (
    "the config has mmdetection's three per-stage mask heads (test-time mask averaging): "
    "all three load from the checkpoint"
)
_DINOV2_NOTE = "released on the release's dinov2 branch (detection/configs/mask_rcnn/dinov2/); AP as reported there"
_OFFICIAL = [
    # Mask R-CNN 3x+MS (detection/README.md, "Mask R-CNN")
    ModelZooEntry("mask_rcnn_vit_adapter_t_3x_ms", "configs/COCO/mask_rcnn_vit_adapter_t_3x_ms.py",
                  f"{_GH}/v0.1.2/mask_rcnn_deit_adapter_tiny_fpn_3x_coco.pth.tar", None, 46.0, 41.0, "official"),
    ModelZooEntry("mask_rcnn_vit_adapter_s_3x_ms", "configs/COCO/mask_rcnn_vit_adapter_s_3x_ms.py",
                  f"{_GH}/v0.1.2/mask_rcnn_deit_adapter_small_fpn_3x_coco.pth.tar", None, 48.2, 42.8, "official"),
    ModelZooEntry("mask_rcnn_vit_adapter_b_3x_ms", "configs/COCO/mask_rcnn_vit_adapter_b_3x_ms.py",
                  f"{_GH}/v0.1.6/mask_rcnn_deit_adapter_base_fpn_3x_coco.pth.tar", None, 49.6, 43.6, "official"),
    ModelZooEntry("mask_rcnn_vit_adapter_l_3x_ms", "configs/COCO/mask_rcnn_vit_adapter_l_3x_ms.py",
                  f"{_GH}/v0.3.1/mask_rcnn_augreg_adapter_large_fpn_3x_coco.pth", None, 52.1, 46.0, "official"),
    # Mask R-CNN 1x (detection/configs/mask_rcnn/README.md; only T has a checkpoint)
    ModelZooEntry("mask_rcnn_vit_adapter_t_1x", "configs/COCO/mask_rcnn_vit_adapter_t_1x.py",
                  f"{_HF}/mask_rcnn_deit_adapter_tiny_fpn_1x_coco.pth", None, 41.1, 37.5, "official"),
    # Mask R-CNN 3x+MS with DINOv2 init (dinov2 branch, detection/configs/mask_rcnn/dinov2/README.md)
    ModelZooEntry("mask_rcnn_dinov2_adapter_s_3x_ms", "configs/COCO/mask_rcnn_dinov2_adapter_s_3x_ms.py",
                  f"{_HF}/mask_rcnn_dinov2_adapter_small_fpn_3x_coco.pth", None, 51.5, 45.6, "official", _DINOV2_NOTE),
    ModelZooEntry("mask_rcnn_dinov2_adapter_b_3x_ms", "configs/COCO/mask_rcnn_dinov2_adapter_b_3x_ms.py",
                  f"{_HF}/mask_rcnn_dinov2_adapter_base_fpn_3x_coco.pth", None, 54.1, 47.8, "official", _DINOV2_NOTE),
    ModelZooEntry("mask_rcnn_dinov2_adapter_l_3x_ms", "configs/COCO/mask_rcnn_dinov2_adapter_l_3x_ms.py",
                  f"{_HF}/mask_rcnn_dinov2_adapter_large_fpn_3x_coco.pth", None, 55.3, 49.0, "official", _DINOV2_NOTE),
    # Cascade Mask R-CNN 3x+MS (detection/README.md, "Other Detectors")
    ModelZooEntry("cascade_mask_rcnn_vit_adapter_s_3x_ms", "configs/COCO/cascade_mask_rcnn_vit_adapter_s_3x_ms.py",
                  f"{_GH}/v0.1.3/cascade_mask_rcnn_deit_adapter_small_fpn_3x_coco.pth.tar", None, 51.5, 44.3,
                  "official", _CASCADE_NOTE),
    ModelZooEntry("cascade_mask_rcnn_vit_adapter_b_3x_ms", "configs/COCO/cascade_mask_rcnn_vit_adapter_b_3x_ms.py",
                  f"{_GH}/v0.3.1/cascade_mask_rcnn_deit_adapter_base_fpn_3x_coco.pth", None, 52.1, 44.8,
                  "official", _CASCADE_NOTE),
]

_REGISTRY: Dict[str, ModelZooEntry] = {e.name: e for e in _OFFICIAL}
_LOADED_ENV_FILE: Optional[str] = None


def register(entry: ModelZooEntry, *, overwrite: bool = False) -> None:
    """Add an entry (e.g. your published checkpoint). Names are unique unless `overwrite`."""
    if entry.sha256 is not None and (len(entry.sha256) != 64 or not all(c in "0123456789abcdef" for c in entry.sha256)):
        raise ValueError(f"model zoo entry {entry.name!r}: sha256 must be 64 lowercase hex digits")
    if entry.name in _REGISTRY and not overwrite and _REGISTRY[entry.name] != entry:
        raise ValueError(f"model zoo name {entry.name!r} is already registered (pass overwrite=True)")
    _REGISTRY[entry.name] = entry


def _load_env_registry() -> None:
    """Register the entries of the JSON file named by $VIT_ADAPTER_MODEL_ZOO (once per file)."""
    global _LOADED_ENV_FILE
    path = os.environ.get(MODEL_ZOO_ENV)
    if not path or path == _LOADED_ENV_FILE:
        return
    try:
        with open(path) as f:
            rows = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"${MODEL_ZOO_ENV}={path}: cannot read a JSON list of model-zoo entries ({e})") from None
    for row in rows if isinstance(rows, list) else [rows]:
        register(ModelZooEntry(**row), overwrite=True)
    _LOADED_ENV_FILE = path


def list_models() -> List[str]:
    _load_env_registry()
    return sorted(_REGISTRY)


def get(name: str) -> ModelZooEntry:
    """The entry called `name` (with or without ``vit_adapter://``)."""
    _load_env_registry()
    key = name[len(PREFIX):] if name.startswith(PREFIX) else name
    if key not in _REGISTRY:
        raise KeyError(f"no model-zoo entry {key!r}; known: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[key]


def get_checkpoint_url(name: str) -> str:
    return get(name).url


def get_config_file(name: str) -> str:
    """Absolute path of the entry's config file in this checkout."""
    path = os.path.join(_REPO_ROOT, get(name).config)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"config of {name!r} not found: {path}")
    return path


def resolve(path_or_name: str) -> Tuple[str, Optional[str]]:
    """Map a model-zoo name / ``vit_adapter://`` name / URL / path to (path or URL, sha256 or None).

    Anything that is not a registry name passes through; a URL or path equal
    to a registered one gets that entry's sha256.
    """
    _load_env_registry()
    if path_or_name.startswith(PREFIX):
        entry = get(path_or_name)
        return entry.url, entry.sha256
    if path_or_name in _REGISTRY and not os.path.exists(path_or_name):
        entry = _REGISTRY[path_or_name]
        return entry.url, entry.sha256
    for entry in _REGISTRY.values():
        if entry.url == path_or_name:
            return entry.url, entry.sha256
    return path_or_name, None


def sha256sum(path: str, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def verify_sha256(path: str, expected: Optional[str]) -> None:
    """Raise :class:`ChecksumError` unless `path` hashes to `expected` (no-op when None)."""
    if expected is None:
        return
    actual = sha256sum(path)
    if actual != expected.lower():
        raise ChecksumError(
            f"sha256 of {path} is {actual}, the model zoo expects {expected}: the file is corrupt, "
            "truncated or not the registered checkpoint (delete it to re-download)"
        )


def get_local_path(path_or_name: str) -> str:
    """Download (or find) a checkpoint by name / URL / path and verify its sha256 when known."""
    from detectron2.utils.file_io import PathManager

    url, sha = resolve(path_or_name)
    local = PathManager.get_local_path(url)
    if not os.path.isfile(local):
        raise FileNotFoundError(f"checkpoint not found: {local}")
    verify_sha256(local, sha)
    return local


class ViTAdapterZooHandler(PathHandler):
    """iopath handler for ``vit_adapter://<name>``: resolves, downloads, verifies."""

    def _get_supported_prefixes(self):
        return [PREFIX]

    def _get_local_path(self, path, **kwargs):
        return get_local_path(path)

    def _open(self, path, mode="r", **kwargs):
        return open(self._get_local_path(path), mode)

    def _isfile(self, path, **kwargs):
        return os.path.isfile(self._get_local_path(path))


def _register_handler():
    from detectron2.utils.file_io import PathManager

    if PREFIX not in getattr(PathManager, "_path_handlers", {}):
        PathManager.register_handler(ViTAdapterZooHandler())


_register_handler()


def entry_as_dict(entry: ModelZooEntry) -> Dict:
    d = asdict(entry)
    d.pop("extra")
    return d
