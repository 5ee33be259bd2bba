#!/usr/bin/env python
"""Long-run memory check (not in CI): train N iterations, report RSS, fail if it grows.

Entry point only: the logic lives in `vit_adapter.tools.long_run_check` (importable and tested).
"""
import runpy

if __name__ == "__main__":
    runpy.run_module("vit_adapter.tools.long_run_check", run_name="__main__", alter_sys=True)
