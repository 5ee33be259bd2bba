"""detectron2's ``SemanticSegmentor`` with the release's test-time inference.

:class:`SlidingWindowSegmentor` trains exactly as detectron2's
``SemanticSegmentor`` (its ``forward`` unchanged) and infers as the release's
mmseg ``EncoderDecoder`` does:

- ``test_mode="slide"`` (``slide_inference``): windows of ``crop_size`` every
  ``stride`` pixels, the last row / column of windows shifted back to end at
  the image border; the logits of every window are summed into the image and
  divided by the number of windows covering each pixel (before any softmax);
- ``test_mode="whole"``: one pass over the whole (padded) image;
- ``test_scales`` / ``test_flip`` (``aug_test``, the release's "ms" column):
  the image is resized by each scale (short and long side times the scale,
  rounded, padded to the backbone's ``size_divisibility``), and flipped
  horizontally when ``test_flip``; each pass's scores are resized back to the
  image, turned into probabilities (softmax, unless ``test_softmax=False``
  for a head that returns probabilities), and averaged.

The network is ``self.backbone`` then ``self.sem_seg_head`` on each window or
whole image (:meth:`network_scores`); any head with detectron2's contract
(eval: per-class scores at the full padded input size) plugs in. ``sem_seg``
in the output is detectron2's: per-class logits at the requested height and
width (``sem_seg_postprocess``); averaged probabilities with ``test_scales`` /
``test_flip``.

Differences from the release: the batch is padded to the backbone's
``size_divisibility`` (detectron2; the release resizes the image to a
multiple of 32 instead), and multi-scale passes resize the model's input
image rather than the original file.
"""
from typing import List, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from detectron2.modeling import SemanticSegmentor
from detectron2.modeling.postprocessing import sem_seg_postprocess
from detectron2.structures import ImageList

__all__ = ["SlidingWindowSegmentor", "slide_windows"]

_MODES = ("whole", "slide")


def _pair(v: Union[int, Sequence[int]], name: str) -> Tuple[int, int]:
    pair = (int(v), int(v)) if isinstance(v, (int, float)) else tuple(int(x) for x in v)
    if len(pair) != 2 or min(pair) < 1:
        raise ValueError(f"{name} must be a positive int or (height, width), got {v!r}")
    return pair


def slide_windows(height: int, width: int, crop_size: Tuple[int, int], stride: Tuple[int, int]) -> List[Tuple[int, int, int, int]]:
    """The (y1, y2, x1, x2) windows of mmseg's ``slide_inference`` over a height x width image.

    Rows start every ``stride[0]`` pixels until one reaches the bottom; a window
    that would cross the border is shifted back to end at it (windows never
    exceed the image; an image smaller than the crop is one window). Same for
    columns.
    """
    (ch, cw), (sh, sw) = crop_size, stride
    rows = max(height - ch + sh - 1, 0) // sh + 1
    cols = max(width - cw + sw - 1, 0) // sw + 1
    windows = []
    for r in range(rows):
        for c in range(cols):
            y2, x2 = min(r * sh + ch, height), min(c * sw + cw, width)
            windows.append((max(y2 - ch, 0), y2, max(x2 - cw, 0), x2))
    return windows


class SlidingWindowSegmentor(SemanticSegmentor):
    """``SemanticSegmentor`` + slide / whole / multi-scale-flip inference (module docstring)."""

    def __init__(
        self,
        *,
        test_mode: str = "whole",
        crop_size: Union[int, Sequence[int]] = (512, 512),
        stride: Union[int, Sequence[int]] = (341, 341),
        test_scales: Sequence[float] = (1.0,),
        test_flip: bool = False,
        test_softmax: bool = True,
        input_format: str = "RGB",
        **kwargs,
    ):
        """
        Args:
            test_mode (str): "slide" (the release's ADE20K setting) or "whole".
            crop_size (int or (h, w)): slide window size (ADE20K 512, 640 for
                BEiT-L 640); multiples of the backbone's ``size_divisibility``.
            stride (int or (h, w)): slide step (ADE20K 341, 426 for 640).
            test_scales (list[float]): image scales of the test; (1.0,) and no
                flip is single-scale (logits out). The release's "ms":
                (0.5, 0.75, 1.0, 1.25, 1.5, 1.75) with flip.
            test_flip (bool): add horizontally flipped passes.
            test_softmax (bool): softmax each pass's scores before averaging
                scales / flips (False for heads whose scores are probabilities).
            input_format (str): channel order of the input images, "RGB" or
                "BGR" (as ``GeneralizedRCNN.input_format``: read by predict /
                export; the data mapper's ``image_format`` must agree).
            kwargs: detectron2 ``SemanticSegmentor`` arguments (backbone,
                sem_seg_head, pixel_mean, pixel_std).
        """
        super().__init__(**kwargs)
        if test_mode not in _MODES:
            raise ValueError(f"test_mode must be one of {_MODES}, got {test_mode!r}")
        self.test_mode = test_mode
        self.crop_size = _pair(crop_size, "crop_size")
        self.stride = _pair(stride, "stride")
        div = self.backbone.size_divisibility
        if test_mode == "slide" and div > 1 and any(c % div for c in self.crop_size):
            raise ValueError(
                f"crop_size {self.crop_size} must be a multiple of the backbone's size_divisibility {div}"
            )
        self.test_scales = tuple(float(s) for s in test_scales)
        if not self.test_scales or min(self.test_scales) <= 0:
            raise ValueError(f"test_scales must be positive numbers, got {list(test_scales)}")
        self.test_flip = bool(test_flip)
        self.test_softmax = bool(test_softmax)
        if input_format not in ("RGB", "BGR"):
            raise ValueError(f"input_format must be 'RGB' or 'BGR', got {input_format!r}")
        self.input_format = input_format

    @property
    def augmented_test(self) -> bool:
        """Whether inference averages several scales / flips (probabilities out)."""
        return self.test_scales != (1.0,) or self.test_flip

    def forward(self, batched_inputs):
        """detectron2's ``SemanticSegmentor.forward`` in training; in inference, the
        same outputs (``[{"sem_seg": (C, height, width)}]``) from :meth:`inference`."""
        if self.training:
            return super().forward(batched_inputs)
        images = [(x["image"].to(self.device) - self.pixel_mean) / self.pixel_std for x in batched_inputs]
        images = ImageList.from_tensors(images, self.backbone.size_divisibility)
        results = self.inference(images)
        processed = []
        for result, input_per_image, image_size in zip(results, batched_inputs, images.image_sizes):
            height = input_per_image.get("height", image_size[0])
            width = input_per_image.get("width", image_size[1])
            processed.append({"sem_seg": sem_seg_postprocess(result, image_size, height, width)})
        return processed

    def inference(self, images: ImageList) -> torch.Tensor:
        """(N, C, H, W) scores of a normalised, padded batch (zeros outside each image
        with test-time augmentation)."""
        if not self.augmented_test:
            return self.predict(images.tensor)
        out = []
        for i, (h, w) in enumerate(images.image_sizes):
            scores = self.augmented_scores(images.tensor[i : i + 1, :, :h, :w])
            full = scores.new_zeros(scores.shape[:2] + images.tensor.shape[-2:])
            full[:, :, :h, :w] = scores
            out.append(full)
        return torch.cat(out)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Scores of ``test_mode`` for a (N, 3, H, W) normalised batch, H and W
        multiples of the backbone's ``size_divisibility``: (N, C, H, W)."""
        if self.test_mode == "whole":
            return self.network_scores(x)
        return self.slide_scores(x)

    def network_scores(self, x: torch.Tensor) -> torch.Tensor:
        """The backbone and head on one (N, 3, h, w) window / image: (N, C, h, w)."""
        scores, _ = self.sem_seg_head(self.backbone(x), None)
        return scores

    def slide_scores(self, x: torch.Tensor) -> torch.Tensor:
        """mmseg's ``slide_inference``: the window scores summed, divided by the count."""
        H, W = x.shape[-2:]
        total, count = None, x.new_zeros((1, 1, H, W))
        for y1, y2, x1, x2 in slide_windows(H, W, self.crop_size, self.stride):
            scores = self.network_scores(x[:, :, y1:y2, x1:x2])
            if total is None:
                total = scores.new_zeros(scores.shape[:2] + (H, W))
            total[:, :, y1:y2, x1:x2] += scores
            count[:, :, y1:y2, x1:x2] += 1
        return total / count

    def augmented_scores(self, image: torch.Tensor) -> torch.Tensor:
        """mmseg's ``aug_test`` on one unpadded (1, 3, h, w) image: the mean over
        scales and flips of each pass's probabilities at (h, w)."""
        h, w = image.shape[-2:]
        div = max(self.backbone.size_divisibility, 1)
        total, passes = None, 0
        for scale in self.test_scales:
            hs, ws = max(int(h * scale + 0.5), 1), max(int(w * scale + 0.5), 1)
            resized = image if (hs, ws) == (h, w) else F.interpolate(
                image, size=(hs, ws), mode="bilinear", align_corners=False
            )
            for flip in (False, True) if self.test_flip else (False,):
                inp = resized.flip(-1) if flip else resized
                scores = self.predict(F.pad(inp, (0, -ws % div, 0, -hs % div)))[:, :, :hs, :ws]
                if flip:
                    scores = scores.flip(-1)
                scores = F.interpolate(scores, size=(h, w), mode="bilinear", align_corners=False)
                if self.test_softmax:
                    scores = scores.softmax(dim=1)
                total = scores if total is None else total + scores
                passes += 1
        return total / passes
