#!/usr/bin/env python
"""Our Mask2Former head vs the release's, staged (see vit_adapter/tools/check_official_mask2former.py).

Entry point only: the logic lives in `vit_adapter.tools.check_official_mask2former` (importable and tested).
"""
import runpy

if __name__ == "__main__":
    runpy.run_module("vit_adapter.tools.check_official_mask2former", run_name="__main__", alter_sys=True)
