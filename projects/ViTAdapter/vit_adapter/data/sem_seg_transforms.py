"""The release's (mmseg 0.20.2) segmentation augmentations that detectron2 lacks.

- :class:`RatioRangeResize`: mmseg ``Resize(img_scale=(2048, 512),
  ratio_range=(0.5, 2.0))``: a ratio r ~ U(0.5, 2.0), then the largest size
  keeping the aspect ratio with long side <= int(2048 r) and short side <=
  int(512 r) (orientation-free, unlike detectron2's ``ResizeScale``);
- :class:`PhotoMetricDistortion`: mmseg ``PhotoMetricDistortion``: each with
  probability 0.5, brightness delta U(-32, 32), contrast U(0.5, 1.5) (before
  or after the colour steps, 50/50), saturation U(0.5, 1.5), hue shift
  U{-18..17} of 180 degrees. HSV is computed in floats (mmseg: OpenCV's
  8-bit HSV), so pixel values may differ by rounding.

Random numbers come from numpy's global RNG, as detectron2's augmentations
(seeded per image by vit_adapter.data.resumable_loader).
"""
import numpy as np
from matplotlib.colors import hsv_to_rgb, rgb_to_hsv
from PIL import Image

from detectron2.data import transforms as T

__all__ = ["RatioRangeResize", "PhotoMetricDistortion"]


class RatioRangeResize(T.Augmentation):
    """mmseg's ratio-range ``Resize`` with ``keep_ratio=True`` (see the module docstring)."""

    def __init__(self, scale=(2048, 512), ratio_range=(0.5, 2.0), interp=Image.BILINEAR):
        """
        Args:
            scale ((int, int)): the (long, short) side bounds at ratio 1.
            ratio_range ((float, float)): the ratio's uniform range.
            interp: PIL interpolation of the image (labels: nearest).
        """
        super().__init__()
        if not 0 < ratio_range[0] <= ratio_range[1]:
            raise ValueError(f"ratio_range must be 0 < low <= high, got {ratio_range}")
        self._init(locals())

    def get_transform(self, image):
        h, w = image.shape[:2]
        ratio = np.random.random_sample() * (self.ratio_range[1] - self.ratio_range[0]) + self.ratio_range[0]
        long_side, short_side = int(max(self.scale) * ratio), int(min(self.scale) * ratio)
        factor = min(long_side / max(h, w), short_side / min(h, w))
        return T.ResizeTransform(h, w, int(h * factor + 0.5), int(w * factor + 0.5), self.interp)


def _convert(img: np.ndarray, alpha: float = 1.0, beta: float = 0.0) -> np.ndarray:
    return np.clip(img.astype(np.float32) * alpha + beta, 0, 255).astype(np.uint8)


class _Distort:
    """The sampled distortion of one image (a picklable ColorTransform op)."""

    def __init__(self, brightness, contrast, contrast_first, saturation, hue):
        self.brightness, self.contrast, self.contrast_first = brightness, contrast, contrast_first
        self.saturation, self.hue = saturation, hue

    def __call__(self, img: np.ndarray) -> np.ndarray:
        if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
            raise ValueError(f"PhotoMetricDistortion needs (H, W, 3) uint8 images, got {img.shape} {img.dtype}")
        if self.brightness is not None:
            img = _convert(img, beta=self.brightness)
        if self.contrast is not None and self.contrast_first:
            img = _convert(img, alpha=self.contrast)
        if self.saturation is not None or self.hue is not None:
            hsv = rgb_to_hsv(img.astype(np.float32) / 255.0)
            if self.saturation is not None:
                hsv[..., 1] = np.clip(hsv[..., 1] * self.saturation, 0, 1)
            if self.hue is not None:
                hsv[..., 0] = (hsv[..., 0] + self.hue / 180.0) % 1.0
            img = np.clip(hsv_to_rgb(hsv) * 255.0 + 0.5, 0, 255).astype(np.uint8)
        if self.contrast is not None and not self.contrast_first:
            img = _convert(img, alpha=self.contrast)
        return img


class PhotoMetricDistortion(T.Augmentation):
    """mmseg's ``PhotoMetricDistortion`` (see the module docstring); RGB or BGR
    uint8 images (the channel order does not change brightness / contrast, and
    hue / saturation are computed on the channels as given, RGB assumed)."""

    def __init__(self, brightness_delta=32, contrast_range=(0.5, 1.5), saturation_range=(0.5, 1.5), hue_delta=18):
        super().__init__()
        self._init(locals())

    def get_transform(self, image):
        def maybe(sample):
            return sample() if np.random.randint(2) else None

        brightness = maybe(lambda: np.random.uniform(-self.brightness_delta, self.brightness_delta))
        contrast_first = bool(np.random.randint(2))
        contrast = maybe(lambda: np.random.uniform(*self.contrast_range))
        saturation = maybe(lambda: np.random.uniform(*self.saturation_range))
        hue = maybe(lambda: np.random.randint(-self.hue_delta, self.hue_delta))
        return T.ColorTransform(_Distort(brightness, contrast, contrast_first, saturation, hue))
