#!/usr/bin/env python
"""Our UperNet segmentor vs the release's mmseg 0.20.2 heads and slide / whole inference.

Entry point only: the logic lives in `vit_adapter.tools.check_official_segmentor` (importable and tested).
"""
import runpy

if __name__ == "__main__":
    runpy.run_module("vit_adapter.tools.check_official_segmentor", run_name="__main__", alter_sys=True)
