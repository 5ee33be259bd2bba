#!/usr/bin/env python
"""Convert an official ViT-Adapter (mmdetection 2.x) checkpoint to detectron2.

Entry point only: the logic lives in `vit_adapter.tools.convert_official_checkpoint` (importable and tested).
"""
import runpy

if __name__ == "__main__":
    runpy.run_module("vit_adapter.tools.convert_official_checkpoint", run_name="__main__", alter_sys=True)
