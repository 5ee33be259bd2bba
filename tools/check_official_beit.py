#!/usr/bin/env python
"""Check our BEiTAdapter (detection and segmentation variants) against the released implementation.

Entry point only: the logic lives in `vit_adapter.tools.check_official_beit` (importable and tested).
"""
import runpy

if __name__ == "__main__":
    runpy.run_module("vit_adapter.tools.check_official_beit", run_name="__main__", alter_sys=True)
