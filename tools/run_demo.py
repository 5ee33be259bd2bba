#!/usr/bin/env python
"""The demo (`make demo`): train a small ViT-Adapter Mask R-CNN on CPU, evaluate, visualise.

Entry point only: the logic lives in `vit_adapter.tools.run_demo` (importable and tested).
"""
import runpy

if __name__ == "__main__":
    runpy.run_module("vit_adapter.tools.run_demo", run_name="__main__", alter_sys=True)
