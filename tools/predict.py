#!/usr/bin/env python
"""Run a trained detector (LazyConfig + checkpoint) on images and save visualisations.

Entry point only: the logic lives in `vit_adapter.tools.predict` (importable and tested).
"""
import runpy

if __name__ == "__main__":
    runpy.run_module("vit_adapter.tools.predict", run_name="__main__", alter_sys=True)
