#!/usr/bin/env python
"""Check our ViTAdapter against the released implementation, numerically.

Entry point only: the logic lives in `vit_adapter.tools.check_official_backbone` (importable and tested).
"""
import runpy

if __name__ == "__main__":
    runpy.run_module("vit_adapter.tools.check_official_backbone", run_name="__main__", alter_sys=True)
