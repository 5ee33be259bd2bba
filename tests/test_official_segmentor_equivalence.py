"""Our UperNet head + slide / whole inference vs mmseg 0.20.2's (tools/check_official_segmentor.py).

Needs mmsegmentation 0.20.2 and mmcv 1.x (Python sources; a scratch environment, see the
tool's docstring): set VIT_ADAPTER_MMSEG to the folder(s) to put on PYTHONPATH
(os.pathsep-separated). Skipped, saying so, when it is not set.
"""
import json
import os
import subprocess
import sys

import pytest

from conftest import REPO_ROOT

MMSEG = os.environ.get("VIT_ADAPTER_MMSEG", "")

pytestmark = pytest.mark.skipif(
    not MMSEG or not all(os.path.isdir(p) for p in MMSEG.split(os.pathsep)),
    reason="needs mmsegmentation 0.20.2 + mmcv 1.x sources: set VIT_ADAPTER_MMSEG=/path/to/them "
    "(see tools/check_official_segmentor.py)",
)


def test_logits_equal_mmseg_0_20_2(tmp_path):
    out = tmp_path / "report.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.environ.get("PYTHONPATH", ""), MMSEG]),
           "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, os.path.join(REPO_ROOT, "tools", "check_official_segmentor.py"),
                           "--json", str(out)], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    for mode in ("whole", "slide"):
        assert report[mode]["max_rel_error"] < 1e-4, report
    assert report["control_rel_error"] > 1e-4  # a 1% change of one head weight is seen
    assert report["input"] == [96, 160] and report["crop_size"] == [64, 64]  # 3 x 4 windows with overlap
