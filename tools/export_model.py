#!/usr/bin/env python
"""Export a trained detector (LazyConfig + train.init_checkpoint) to ONNX.

Entry point only: the logic lives in `vit_adapter.tools.export_model` (importable and tested).
"""
import runpy

if __name__ == "__main__":
    runpy.run_module("vit_adapter.tools.export_model", run_name="__main__", alter_sys=True)
