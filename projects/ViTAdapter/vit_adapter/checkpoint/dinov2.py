"""DINOv2 ViT weights (patch 14) for the patch-16 detection ViT.

Layouts recognised (all through :func:`vit_adapter.checkpoint.imagenet.convert_imagenet_vit_state_dict`,
which calls :func:`adapt_dinov2_state_dict` first):

* Meta's hub files ``dinov2_vit{s,b,l}14_pretrain.pth``: ``patch_embed.proj``
  14 x 14, ``cls_token``, ``mask_token``, ``pos_embed`` 1 x (1 + 37 * 37) x D
  (518 px / 14), ``blocks.N.ls1.gamma`` / ``ls2.gamma``, final ``norm``;
  training checkpoints with chunked blocks (``blocks.C.N.*``) are flattened;
* timm's ``vit_{small,base,large}_patch14_dinov2`` state dicts (same names, no
  ``mask_token``);
* the register variants (Meta ``*_reg4_pretrain.pth``: ``register_tokens``;
  timm ``*_reg4_dinov2``: ``reg_token``, pos-embed without a cls slot).

What happens to each part:

* ``patch_embed.proj.weight`` (D, 3, 14, 14) -> (D, 3, 16, 16), by default
  exactly as the release's ``convert_14to16.py``: bilinear interpolation,
  ``align_corners=False`` (``"bilinear"``). ``"pinv"`` uses timm's
  ``resample_patch_embed`` (FlexiViT: the kernel whose response to a
  bicubic-upsampled 16 x 16 patch equals the original kernel's response to the
  14 x 14 patch). The release's checkpoints were trained from the bilinear
  kernel; docs/dinov2_and_cascade.md has the measured difference between the two
  (``vit_adapter/tools/compare_patch_resize.py``);
* ``ls1.gamma`` / ``ls2.gamma`` -> ``gamma1`` / ``gamma2``;
* ``pos_embed``: its 37 x 37 grid is the detection configs' pre-training grid
  (``pretrain_size=592`` = 37 x 16), so it loads unchanged (other grids are
  resized bicubically, as for every ImageNet ViT);
* ``cls_token``, ``mask_token``, final ``norm`` and register tokens are dropped
  (listed in the load report). Registers: the detection ViT runs on patch
  tokens only, as it already does without the cls token; the registers'
  learned values have no slot, so a ``_reg4`` model's blocks see no register
  tokens (its attention then differs from its pre-training; the release
  ships no register configs);
* ViT-g (``mlp.w12`` / ``mlp.w3``: SwiGLU MLP) is refused: the detection
  ViT's blocks have a GELU MLP (``fc1`` / ``fc2``).
"""
import re
from typing import Dict, List, Mapping, Tuple

import torch
import torch.nn.functional as F

__all__ = ["DINOV2_HUB_URLS", "PATCH_KERNEL_RESIZE_MODES", "adapt_dinov2_state_dict", "resize_patch_kernel"]

PATCH_KERNEL_RESIZE_MODES = ("bilinear", "pinv")

# Meta's hub files, as the release's detection/configs/mask_rcnn/dinov2/README.md links them.
DINOV2_HUB_URLS = {
    size: f"https://dl.fbaipublicfiles.com/dinov2/dinov2_vit{size}14/dinov2_vit{size}14_pretrain.pth"
    for size in ("s", "b", "l", "g")
}

_CHUNKED_BLOCK = re.compile(r"^blocks\.\d+\.(\d+)\.(.+)$")
_SWIGLU = re.compile(r"^blocks\.\d+\.mlp\.(w12|w3)\.")


def resize_patch_kernel(weight: torch.Tensor, size: Tuple[int, int], mode: str = "bilinear") -> torch.Tensor:
    """(D, C, h, w) patch-embedding kernel -> (D, C, *size).

    Args:
        weight: the conv kernel.
        size: target (height, width).
        mode: "bilinear" (the release: ``F.interpolate(..., mode="bilinear",
            align_corners=False)``, no rescaling) or "pinv" (timm
            ``resample_patch_embed``, FlexiViT pseudo-inverse of a bicubic,
            antialiased resize).
    """
    if mode not in PATCH_KERNEL_RESIZE_MODES:
        raise ValueError(f"patch kernel resize must be one of {PATCH_KERNEL_RESIZE_MODES}, got {mode!r}")
    if weight.dim() != 4:
        raise ValueError(f"patch kernel must be (D, C, h, w), got shape {tuple(weight.shape)}")
    size = (int(size[0]), int(size[1]))
    if tuple(weight.shape[-2:]) == size:
        return weight
    w = weight.float()
    if mode == "bilinear":
        out = F.interpolate(w, size=size, mode="bilinear", align_corners=False)
    else:
        from timm.layers import resample_patch_embed

        out = resample_patch_embed(w, new_size=list(size), interpolation="bicubic", antialias=True)
    return out.to(weight.dtype)


def adapt_dinov2_state_dict(
    state_dict: Mapping[str, torch.Tensor], patch_size: int, mode: str = "bilinear"
) -> Tuple[Dict[str, torch.Tensor], List[str]]:
    """DINOv2-specific steps before the generic ImageNet ViT conversion.

    Flattens chunked blocks, renames ``register_tokens`` to timm's ``reg_token``
    (dropped later with the other prefix tokens), refuses SwiGLU blocks and
    resizes a patch kernel of another size to ``patch_size``. Other keys pass
    through. Returns (state_dict, notes).
    """
    swiglu = sorted(k for k in state_dict if _SWIGLU.match(k))
    if swiglu:
        raise ValueError(
            f"this checkpoint's blocks use a SwiGLU MLP ({swiglu[0]}, DINOv2 ViT-g): the detection ViT's "
            "blocks have a GELU MLP (fc1 / fc2); use DINOv2 ViT-S/14, B/14 or L/14"
        )
    out: Dict[str, torch.Tensor] = {}
    notes: List[str] = []
    for key, value in state_dict.items():
        m = _CHUNKED_BLOCK.match(key)
        if m:  # blocks.<chunk>.<global index>.*
            key = f"blocks.{m.group(1)}.{m.group(2)}"
        if key == "register_tokens":
            key = "reg_token"
        out[key] = value
    w = out.get("patch_embed.proj.weight")
    if isinstance(w, torch.Tensor) and w.dim() == 4 and tuple(w.shape[-2:]) != (patch_size, patch_size):
        out["patch_embed.proj.weight"] = resize_patch_kernel(w, (patch_size, patch_size), mode)
        notes.append(
            f"patch_embed.proj.weight resized {w.shape[-2]}x{w.shape[-1]} -> {patch_size}x{patch_size} ({mode})"
        )
    return out, notes
