#!/usr/bin/env python
"""Compare 14 -> 16 patch-kernel resizes (bilinear as the release, FlexiViT pinv) on images.

Entry point only: the logic lives in `vit_adapter.tools.compare_patch_resize`.
"""
import runpy

if __name__ == "__main__":
    runpy.run_module("vit_adapter.tools.compare_patch_resize", run_name="__main__", alter_sys=True)
