#!/usr/bin/env python
"""Speed, memory and FLOPs of ViT-Adapter against its baselines, in one run.

Entry point only: the logic lives in `vit_adapter.tools.benchmark` (importable and tested).
"""
import runpy

if __name__ == "__main__":
    runpy.run_module("vit_adapter.tools.benchmark", run_name="__main__", alter_sys=True)
