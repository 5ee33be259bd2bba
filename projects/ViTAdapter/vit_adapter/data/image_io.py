"""The one image reader of the project: training, evaluation and prediction.

`read_image` is detectron2's `detection_utils.read_image` (EXIF orientation
applied, "BGR" / "RGB" / "L" output) for every PIL mode, with one error type
and a pixel-count limit checked from the file header, before any pixel is
decoded:

- grayscale, palette, RGBA, CMYK, YCbCr: converted (alpha dropped);
- 16-bit integer (PNG "I;16", "I") images: scaled to 8 bits (value / 257),
  so a 16-bit grayscale image keeps its contrast instead of clipping to white;
  32-bit float ("F"): clipped to [0, 255];
- more than `max_image_pixels()` pixels (width x height from the header):
  `ImageTooLargeError`. The limit is `DEFAULT_MAX_IMAGE_PIXELS` unless the
  environment variable `VIT_ADAPTER_MAX_IMAGE_PIXELS` (or the `max_pixels`
  argument) says otherwise; 0 disables it.

Used by `RobustDatasetMapper` (training and evaluation), the checked dataset
loader's decode check and `tools/predict.py`, so the model sees the same
pixels everywhere.
"""
import os

import numpy as np
from PIL import Image

from detectron2.data import detection_utils as utils
from detectron2.utils.file_io import PathManager

__all__ = [
    "BadImageError",
    "DEFAULT_MAX_IMAGE_PIXELS",
    "ImageTooLargeError",
    "check_image_header",
    "max_image_pixels",
    "read_image",
    "read_image_or_raise",
]

# The limit is what one image may cost the pipeline, per pixel of its original size.
# Evaluation dominates: detectron2's `detector_postprocess` pastes every detection's mask
# at the original size (`test_topk_per_image`, 100, bool masks: 100 bytes per pixel), next
# to the decoded image (3 B/px) and COCOEvaluator's RLE encoding of one mask (1 B/px).
# Training resizes first (the decoded image plus one resized copy, ~6 B/px). With a
# budget of 2 GiB per evaluated image: 2**31 / 104 B/px ~ 20 megapixels (e.g. 5472 x 3648,
# a 20 MP camera; 31x a COCO image). Measured at the limit: docs/robustness.md.
EVAL_BYTES_PER_PIXEL = 100 + 3 + 1
DEFAULT_MAX_IMAGE_PIXELS = 20_000_000
MAX_PIXELS_ENV = "VIT_ADAPTER_MAX_IMAGE_PIXELS"


class BadImageError(ValueError):
    """An image file cannot be decoded into pixels."""


class ImageTooLargeError(BadImageError):
    """An image has more pixels than `max_image_pixels()` (checked before decoding)."""


def max_image_pixels(max_pixels=None) -> int:
    """The pixel limit: `max_pixels` if given, else $VIT_ADAPTER_MAX_IMAGE_PIXELS,
    else `DEFAULT_MAX_IMAGE_PIXELS`. 0 (or less) means no limit."""
    if max_pixels is not None:
        return int(max_pixels)
    value = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if not value:
        return DEFAULT_MAX_IMAGE_PIXELS
    try:
        return int(float(value))
    except ValueError:
        raise ValueError(f"{MAX_PIXELS_ENV}={value!r} is not a number of pixels") from None


def check_image_header(image: Image.Image, max_pixels=None):
    """Raise ImageTooLargeError if the opened (not yet decoded) `image` is over the limit."""
    limit = max_image_pixels(max_pixels)
    w, h = image.size
    if limit > 0 and w * h > limit:
        raise ImageTooLargeError(
            f"image of {w}x{h} = {w * h} pixels is over the limit of {limit} pixels "
            f"(set {MAX_PIXELS_ENV} to raise it, 0 for no limit)"
        )


def _to_8bit(image: Image.Image) -> Image.Image:
    """16/32-bit integer and float single-channel images -> 8-bit "L"."""
    arr = np.asarray(image)
    if image.mode == "F":
        arr = np.clip(np.nan_to_num(arr), 0, 255)
    else:  # "I;16*" (0..65535) or "I" (assumed 16-bit range, as PNG decoders give)
        arr = np.clip(arr.astype(np.float64) / 257.0, 0, 255)
    return Image.fromarray(arr.round().astype(np.uint8), mode="L")


def read_image(file_name: str, format: str = "BGR", max_pixels=None) -> np.ndarray:
    """Decode an image file as the model sees it.

    Args:
        file_name (str): image path (any `PathManager` path).
        format (str): "BGR", "RGB" or "L", as `detectron2.data.detection_utils.read_image`.
        max_pixels (int or None): pixel limit; None: `max_image_pixels()`.

    Returns:
        (H, W, 3) uint8 array ((H, W, 1) for "L"); EXIF orientation applied.

    Raises:
        ImageTooLargeError: more pixels than the limit (nothing decoded).
        BadImageError: the file is missing, truncated, or not an image.
    """
    try:
        with PathManager.open(file_name, "rb") as f:
            image = Image.open(f)
            check_image_header(image, max_pixels)
            image.load()  # decode now: truncated files fail here, inside the try
        image = utils._apply_exif_orientation(image)
        if image.mode in ("I", "F") or image.mode.startswith("I;16"):
            image = _to_8bit(image)
        if image.mode not in ("RGB", "L"):
            image = image.convert("RGB")  # RGBA, LA, P, CMYK, YCbCr...: alpha is dropped
        array = utils.convert_PIL_to_numpy(image, format)
    except ImageTooLargeError:
        raise
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, DecompressionBombError...
        raise BadImageError(f"{type(e).__name__}: {e}") from None
    if array.ndim != 3 or array.shape[0] == 0 or array.shape[1] == 0:
        raise BadImageError(f"decoded to an empty array of shape {array.shape}")
    return array


def read_image_or_raise(file_name: str, format: str, error_type: type) -> np.ndarray:
    """`read_image` for an entry point: any failure is one `error_type` line
    naming the file ("image file ... not found" / "is too large" / "is corrupt
    or not an image")."""
    if not os.path.isfile(file_name):
        raise error_type(f"image file not found: {file_name}")
    try:
        return read_image(file_name, format)
    except ImageTooLargeError as e:
        raise error_type(f"image file {file_name} is too large: {e}") from None
    except BadImageError as e:
        raise error_type(f"image file {file_name} is corrupt or not an image ({e})") from None
