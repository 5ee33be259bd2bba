"""tools/benchmark.py --sections seg --quick: runs end to end and reports every part.

Structure and sanity only: no timing assertions (the machine is shared)."""
import json
import math
import os
import subprocess
import sys

from conftest import REPO_ROOT

SCRIPT = os.path.join(REPO_ROOT, "tools", "benchmark.py")


def _positive(x):
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def test_seg_section_quick(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, SCRIPT, "--quick", "--sections", "seg", "--device", "cpu", "--threads", "1",
         "--clock", "process", "--json", str(out)],
        capture_output=True, text=True, cwd=REPO_ROOT, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for title in ("== 7a. ViT-Adapter-S UperNet inference", "== 7b. ViT-Adapter-S UperNet training step",
                  "== 7c. "):
        assert title in proc.stdout
    res = json.loads(out.read_text())["seg"]
    inf = res["inference"]
    assert inf["image"] == [64, 96] and _positive(inf["ratio"]) and _positive(inf["a_ms"])
    step = res["train_step"]
    assert _positive(step["no_cp"]["peak_tensors_mb"]) and _positive(step["cp_over_no_cp"]["time"])
    assert step["cp"]["peak_tensors_mb"] <= step["no_cp"]["peak_tensors_mb"] * 1.05  # checkpointing never costs memory
    if "skipped" not in res["deploy"]:
        assert _positive(res["deploy"]["ratio"]) and res["deploy"]["max_abs_diff"] < 1e-3
