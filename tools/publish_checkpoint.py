#!/usr/bin/env python
"""Publish a training checkpoint: weights only, .pth + .safetensors, sha256, model-zoo row.

Entry point only: the logic lives in `vit_adapter.tools.publish_checkpoint` (importable and tested).
"""
import runpy

if __name__ == "__main__":
    runpy.run_module("vit_adapter.tools.publish_checkpoint", run_name="__main__", alter_sys=True)
