"""ViT-Adapter model zoo: name -> (config, checkpoint URL or path, sha256, reported AP).

Load by name, ``vit_adapter://<name>`` or URL anywhere detectron2 takes a
checkpoint path (``train.init_checkpoint``, ``--eval-only``)::

    python train_net.py --config-file configs/COCO/mask_rcnn_vit_adapter_t_3x_ms.py --eval-only \\
        train.init_checkpoint=vit_adapter://mask_rcnn_vit_adapter_t_3x_ms

:class:`vit_adapter.checkpoint.checkpointer.ViTAdapterCheckpointer` resolves the name
(:func:`get_local_path`): ``http(s)://`` files are downloaded by this module
into ``<iopath cache ($FVCORE_CACHE)>/vit_adapter/<key>/<file name>``, where
``<key>`` hashes the whole normalised URL (scheme, host, path, query), so two
URLs never share a cache file and no URL can write outside the cache;
``file://`` URLs are local paths; other schemes go to detectron2's
``PathManager``. ``vit_adapter://`` is also a registered iopath handler.

sha256: a registered digest is checked on every load, for the entry's URL
and any spelling of it (``./`` and ``..`` segments, host case, default port,
a query string or fragment added). The official entries are the COCO
checkpoints of the release (czczup/ViT-Adapter, ``detection/README.md`` and
``detection/configs/*/README.md``) with the box / mask AP reported there;
their sha256 is not published, so they are *unverified*: the first download
is trusted, a warning says so, and its digest is recorded next to the cached
file (``<file>.sha256``), which every later load checks
(:func:`vit_adapter.checkpoint.io.read_checkpoint`). Your own checkpoints:
``register(...)`` in code, or a JSON list of entries in the file named by
``$VIT_ADAPTER_MODEL_ZOO`` (``tools/publish_checkpoint.py`` prints the entry).
"""
import difflib
import hashlib
import http.client
import json
import logging
import os
import posixpath
import re
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import asdict, dataclass, fields
from typing import Dict, List, Optional, Tuple

from iopath.common.file_io import PathHandler

from vit_adapter.utils.file_io import atomic_write, atomic_write_text

__all__ = [
    "ChecksumError",
    "ModelZooError",
    "UnknownModelError",
    "cache_path",
    "normalize_url",
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

logger = logging.getLogger(__name__)


class ModelZooError(ValueError):
    """A model-zoo name, URL or registry file cannot be used (one-line message)."""


class ChecksumError(ModelZooError):
    """A downloaded / local checkpoint does not have the registered sha256."""


class UnknownModelError(ModelZooError, KeyError):
    """No model-zoo entry of that name."""

    def __str__(self):  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


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

    def table_row(self) -> str:
        """The MODEL_ZOO.md table row of this entry."""
        ap = lambda v: "-" if v is None else f"{v:.1f}"  # noqa: E731
        sha = f"`{self.sha256[:12]}`" if self.sha256 else "unknown"  # unverified: trusted on first download
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
    if entry.sha256 is not None and not re.fullmatch(r"[0-9a-f]{64}", str(entry.sha256)):
        raise ModelZooError(f"model zoo entry {entry.name!r}: sha256 must be 64 lowercase hex digits")
    if entry.name in _REGISTRY and not overwrite and _REGISTRY[entry.name] != entry:
        raise ModelZooError(f"model zoo name {entry.name!r} is already registered (pass overwrite=True)")
    _REGISTRY[entry.name] = entry


_FIELDS = tuple(f.name for f in fields(ModelZooEntry))


def _load_env_registry() -> None:
    """Register the entries of the JSON file named by $VIT_ADAPTER_MODEL_ZOO (once per file)."""
    global _LOADED_ENV_FILE
    path = os.environ.get(MODEL_ZOO_ENV)
    if not path or path == _LOADED_ENV_FILE:
        return
    where = f"${MODEL_ZOO_ENV}={path}"
    try:
        with open(path) as f:
            rows = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelZooError(f"{where}: cannot read a JSON list of model-zoo entries ({e})") from None
    for n, row in enumerate(rows if isinstance(rows, list) else [rows]):
        if not isinstance(row, dict):
            raise ModelZooError(f"{where}: entry {n} is a {type(row).__name__}, not an object")
        unknown = sorted(set(row) - set(_FIELDS))
        missing = [k for k in ("name", "config", "url") if k not in row]
        if unknown or missing:
            raise ModelZooError(
                f"{where}: entry {n} has " + (f"unknown field(s) {unknown}" if unknown else f"no {missing}")
                + f"; the fields are {list(_FIELDS)}"
            )
        for key, value in row.items():
            numeric = key in ("box_ap", "mask_ap")
            ok = (value is None or isinstance(value, (int, float))) if numeric else (
                isinstance(value, str) or (key == "sha256" and value is None))
            if not ok or isinstance(value, bool):
                kind = "a number or null" if numeric else "a string" + (" or null" if key == "sha256" else "")
                raise ModelZooError(f"{where}: entry {n} field {key!r} is {value!r:.60}, expected {kind}")
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
        close = difflib.get_close_matches(key, _REGISTRY, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise UnknownModelError(f"no model-zoo entry {key!r}; {hint}known: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[key]


def get_checkpoint_url(name: str) -> str:
    return get(name).url


def get_config_file(name: str) -> str:
    """Absolute path of the entry's config file in this checkout."""
    path = os.path.join(_REPO_ROOT, get(name).config)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"config of {name!r} not found: {path}")
    return path


def normalize_url(url: str, *, query: bool = True) -> str:
    """``scheme://host[:port]/path[?query]`` with scheme and host lower-cased, the
    default port dropped, ``.`` / ``..`` / empty path segments resolved (RFC 3986)
    and the fragment dropped; without the query when `query` is False. Paths
    (no ``://``) are returned unchanged."""
    if "://" not in url:
        return url
    try:
        parts = urllib.parse.urlsplit(url)
        scheme, host, port = parts.scheme.lower(), (parts.hostname or "").lower(), parts.port
    except ValueError as e:
        raise ModelZooError(f"{url} is not a valid URL ({e})") from None
    if port is not None and (scheme, port) not in (("http", 80), ("https", 443)):
        host = f"{host}:{port}"
    path = posixpath.normpath("/" + urllib.parse.unquote(parts.path)) if parts.path else "/"
    path = "/" + path.lstrip("/")  # normpath keeps a leading "//"
    return urllib.parse.urlunsplit((scheme, host, urllib.parse.quote(path), parts.query if query else "", ""))


def resolve(path_or_name: str) -> Tuple[str, Optional[str]]:
    """Map a model-zoo name / ``vit_adapter://`` name / URL / path to (path or URL, sha256 or None).

    Anything that is not a registry name passes through; a URL that normalises
    (:func:`normalize_url`, query ignored) to a registered one, or a path equal
    to a registered one, gets that entry's sha256.
    """
    _load_env_registry()
    if path_or_name.startswith(PREFIX):
        entry = get(path_or_name)
        return entry.url, entry.sha256
    if path_or_name in _REGISTRY and not os.path.exists(path_or_name):
        entry = _REGISTRY[path_or_name]
        return entry.url, entry.sha256
    key = normalize_url(path_or_name, query=False)
    for entry in _REGISTRY.values():
        if normalize_url(entry.url, query=False) == key:
            return path_or_name, entry.sha256
    return path_or_name, None


def sha256sum(path: str, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def verify_sha256(path: str, expected: Optional[str], *, what: str = "the model zoo expects") -> None:
    """Raise :class:`ChecksumError` unless `path` hashes to `expected` (no-op when None)."""
    if expected is None:
        return
    actual = sha256sum(path)
    if actual != expected.lower():
        raise ChecksumError(
            f"sha256 of {path} is {actual}, {what} {expected}: the file is corrupt, "
            "truncated or not the registered checkpoint (delete it to re-download)"
        )


def cache_path(url: str) -> str:
    """Where :func:`get_local_path` keeps the download of `url`: under the iopath cache,
    in a folder named after the sha256 of the whole normalised URL, with the URL's
    file name reduced to ``[A-Za-z0-9._-]`` (never ``.`` / ``..``)."""
    from iopath.common.file_io import get_cache_dir

    root = os.path.realpath(os.path.join(get_cache_dir(), "vit_adapter"))
    norm = normalize_url(url)
    name = re.sub(r"[^A-Za-z0-9._-]", "_", posixpath.basename(urllib.parse.urlsplit(norm).path))
    if name.strip(".") == "":
        name = "checkpoint"
    path = os.path.join(root, hashlib.sha256(norm.encode()).hexdigest()[:24], name[-120:])
    if os.path.commonpath([root, os.path.realpath(path)]) != root:  # cannot happen; kept as the contract
        raise ModelZooError(f"cache path of {url} leaves the cache directory {root}")
    return path


def _download(url: str, expected: Optional[str], dst: str) -> None:
    """Stream `url` into `dst` (atomically), check `expected` before the file
    appears, and record the digest in ``dst.sha256``."""

    digest = hashlib.sha256()

    def write(f):
        with urllib.request.urlopen(url, timeout=60) as r:
            for block in iter(lambda: r.read(1 << 20), b""):
                digest.update(block)
                f.write(block)
        if expected is not None and digest.hexdigest() != expected:
            raise ChecksumError(
                f"sha256 of the download of {url} is {digest.hexdigest()}, the model zoo expects {expected}: "
                "not the registered checkpoint (nothing was kept)"
            )

    logger.info("Downloading %s -> %s", url, dst)
    try:
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        atomic_write(dst, write)
        atomic_write_text(dst + ".sha256", f"{digest.hexdigest()}  {os.path.basename(dst)}\n")
    except ChecksumError:
        raise
    except urllib.error.HTTPError as e:
        raise ModelZooError(f"cannot download {url} (HTTP {e.code} {e.reason})") from None
    except (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError, ValueError) as e:
        reason = getattr(e, "reason", None) or e
        raise ModelZooError(
            f"cannot download {url} ({reason}); offline? Download it elsewhere and pass the local file "
            "(its sha256 is checked when the model zoo knows it)"
        ) from None
    except OSError as e:
        raise ModelZooError(f"cannot store the download of {url} in {os.path.dirname(dst)} ({e})") from None
    if expected is None:
        logger.warning(
            "%s has no registered sha256 (unverified): trusted on first download; its digest %s is recorded "
            "in %s.sha256 and checked on every later load.", url, digest.hexdigest(), dst,
        )


def get_local_path(path_or_name: str) -> str:
    """Local file of a model-zoo name / URL / path: ``http(s)`` downloaded into
    :func:`cache_path` (once), ``file://`` read in place, other schemes through
    detectron2's ``PathManager``; the registered sha256, when there is one, is
    checked every time. A local path is returned as given (not checked)."""
    url, sha = resolve(path_or_name)
    scheme = urllib.parse.urlsplit(url).scheme.lower() if "://" in url else ""
    if scheme in ("http", "https"):
        local = cache_path(url)
        if not os.path.isfile(local):
            _download(url, sha, local)
    elif scheme == "file":
        parts = urllib.parse.urlsplit(url)
        if parts.netloc not in ("", "localhost"):
            raise ModelZooError(f"{url}: a file:// URL must name a local file (file:///path)")
        local = urllib.request.url2pathname(parts.path)
    elif scheme:
        from detectron2.utils.file_io import PathManager

        local = PathManager.get_local_path(url)
    else:
        local = url
    if sha is not None or scheme:
        if not os.path.isfile(local):
            raise ModelZooError(f"checkpoint not found: {local}" + (f" (from {path_or_name})" if local != path_or_name else ""))
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
    return asdict(entry)
