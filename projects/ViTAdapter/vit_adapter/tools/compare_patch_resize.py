"""How well a resized 14 -> 16 patch kernel reproduces the original patch embedding.

    python tools/compare_patch_resize.py [--checkpoint dinov2_vits14_pretrain.pth]
                                         [--images 8] [--grid 16]

For an image X at 14g x 14g pixels the original kernel gives the patch
embedding E14 = conv(X, w14, stride 14); the detection ViT sees the same
content at 16g x 16g pixels (X resized) and computes E16 = conv(X16, w16,
stride 16) with the resized kernel w16. Both are (g x g) token grids of the
same image regions. Printed per kernel-resize mode ("bilinear": the release,
"pinv": timm's FlexiViT resample) and image-resize mode: mean / min cosine
similarity of E16 vs E14 over tokens and images, and the norm ratio
||E16|| / ||E14|| (kernel responses, bias left out: it is identical; the
bilinear kernel is not rescaled, so it sums 256 instead of 196 pixels).

Inputs: the demo dataset's val images (vit_adapter.data.generate_demo_dataset:
shapes on textured backgrounds, written to a temporary folder) and smooth
synthetic images (low-pass noise plus random gratings); ImageNet mean / std.
Kernels: --checkpoint (a DINOv2 hub / timm file: its patch_embed.proj.weight),
else two stand-ins, stated in the output: timm's initialisation of a patch-14
DINOv2 (white noise, the worst case for interpolation) and the same noise
low-pass filtered (Gaussian, sigma 1.5 px), closer to trained patch kernels.
"""
import argparse
import math
import tempfile

import numpy as np
import torch
import torch.nn.functional as F

from vit_adapter.checkpoint.dinov2 import PATCH_KERNEL_RESIZE_MODES, resize_patch_kernel

MEAN = torch.tensor([123.675, 116.28, 103.53]).view(1, 3, 1, 1)
STD = torch.tensor([58.395, 57.12, 57.375]).view(1, 3, 1, 1)
IMAGE_RESIZE = {"bilinear": dict(mode="bilinear", align_corners=False),
                "bicubic-aa": dict(mode="bicubic", align_corners=False, antialias=True)}


def _blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (N, C, H, W) over H and W (reflect padding)."""
    r = max(1, int(3 * sigma))
    t = torch.arange(-r, r + 1, dtype=x.dtype)
    k = torch.exp(-(t**2) / (2 * sigma**2))
    k = (k / k.sum()).to(x)
    c = x.shape[1]
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="reflect"), k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    return F.conv2d(F.pad(x, (0, 0, r, r), mode="reflect"), k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


def demo_images(n: int, size: int) -> torch.Tensor:
    """(n, 3, size, size) float RGB 0..255: demo val images resized to `size`."""

    from vit_adapter.data import generate_demo_dataset
    from vit_adapter.data.image_io import read_image

    with tempfile.TemporaryDirectory() as root:
        (json_file, folder) = generate_demo_dataset(root, num_train=1, num_val=n, image_size=256)["val"]
        import json
        import os

        with open(json_file) as f:
            files = [im["file_name"] for im in json.load(f)["images"]]
        imgs = [read_image(os.path.join(folder, os.path.basename(p)), "RGB") for p in files]
    x = torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).float()
    return F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False, antialias=True).clamp(0, 255)


def smooth_images(n: int, size: int, seed: int = 0) -> torch.Tensor:
    """(n, 3, size, size) 0..255: low-pass noise plus two random gratings per image."""
    g = torch.Generator().manual_seed(seed)
    x = _blur(torch.randn(n, 3, size, size, generator=g), sigma=size / 40)
    x = x / x.std(dim=(1, 2, 3), keepdim=True)
    yy, xx = torch.meshgrid(torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32),
                            indexing="ij")
    for i in range(n):
        for _ in range(2):
            f = 2 * math.pi * (0.01 + 0.09 * torch.rand(1, generator=g).item())  # periods of 10..100 px
            a = math.pi * torch.rand(1, generator=g).item()
            x[i] += 0.5 * torch.sin(f * (xx * math.cos(a) + yy * math.sin(a)))[None]
    return (128 + 40 * x).clamp(0, 255)


def compare(kernel14: torch.Tensor, images: torch.Tensor, grid: int):
    """{(kernel mode, image mode): (mean cos, min cos, norm ratio)}."""
    x14 = (F.interpolate(images, size=(14 * grid,) * 2, mode="bicubic", align_corners=False, antialias=True)
           - MEAN) / STD
    e14 = F.conv2d(x14, kernel14, stride=14).flatten(2)
    out = {}
    for kmode in PATCH_KERNEL_RESIZE_MODES:
        k16 = resize_patch_kernel(kernel14, (16, 16), kmode)
        for imode, kw in IMAGE_RESIZE.items():
            x16 = F.interpolate(x14, size=(16 * grid,) * 2, **kw)
            e16 = F.conv2d(x16, k16, stride=16).flatten(2)
            cos = F.cosine_similarity(e16, e14, dim=1)  # (N, tokens)
            ratio = e16.norm() / e14.norm()
            out[(kmode, imode)] = (cos.mean().item(), cos.min().item(), ratio.item())
    return out


def kernels(checkpoint):
    if checkpoint:
        from vit_adapter.checkpoint.io import load_checkpoint_file

        sd = load_checkpoint_file(checkpoint)
        sd = sd.get("model", sd)
        return {f"checkpoint {checkpoint}": sd["patch_embed.proj.weight"].float()}
    import timm

    torch.manual_seed(0)
    w = timm.create_model("vit_small_patch14_dinov2", pretrained=False, img_size=518, depth=1)
    w = w.patch_embed.proj.weight.detach().float()
    smooth = _blur(w, 1.5)
    return {"timm init (white noise)": w, "low-pass timm init (sigma 1.5 px)": smooth * (w.std() / smooth.std())}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", help="DINOv2 hub / timm file (default: stand-in kernels, see --help)")
    p.add_argument("--images", type=int, default=8, help="images per input kind")
    p.add_argument("--grid", type=int, default=16, help="tokens per side (14g / 16g px images)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    inputs = {"demo dataset": demo_images(args.images, 14 * args.grid),
              "smooth synthetic": smooth_images(args.images, 14 * args.grid)}
    print(f"{'kernel':36s} {'inputs':18s} {'kernel resize':14s} {'image resize':12s} "
          f"{'mean cos':>9s} {'min cos':>9s} {'norm ratio':>10s}")
    for kname, k in kernels(args.checkpoint).items():
        for iname, imgs in inputs.items():
            for (kmode, imode), (mean, low, ratio) in compare(k, imgs, args.grid).items():
                print(f"{kname:36s} {iname:18s} {kmode:14s} {imode:12s} {mean:9.4f} {low:9.4f} {ratio:10.4f}")


if __name__ == "__main__":
    main()
