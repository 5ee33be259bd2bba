#!/usr/bin/env python
"""The segmentation demo (`make demo-seg`): train ViT-Adapter + UperNet on CPU, evaluate, draw overlays.

Entry point only: the logic lives in `vit_adapter.tools.run_demo_seg` (importable and tested).
"""
import runpy

if __name__ == "__main__":
    runpy.run_module("vit_adapter.tools.run_demo_seg", run_name="__main__", alter_sys=True)
