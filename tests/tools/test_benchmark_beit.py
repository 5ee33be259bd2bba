"""tools/benchmark.py --sections beit_memory (--quick: tiny widths): the BEiT-Adapter memory row.

Structure and sanity only (no timing or memory-size assertions: the machine is shared);
the real row is BEiT-Adapter-L at 1024x1024 on a GPU.
"""
import json
import math
import os
import subprocess
import sys

from conftest import REPO_ROOT


def test_beit_memory_section_quick(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, os.path.join(REPO_ROOT, "tools", "benchmark.py"), "--quick", "--sections", "beit_memory",
         "--device", "cpu", "--threads", "1", "--clock", "process", "--json", str(out)],
        capture_output=True, text=True, cwd=REPO_ROOT, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "== 6. Mask R-CNN BEiT-Adapter-L 64x64" in proc.stdout
    rows = json.loads(out.read_text())["beit_memory"]
    assert [(r["model"], r["mode"], r["with_cp"]) for r in rows] == [("beit", "train", False), ("beit", "train", True)]
    for r in rows:
        assert math.isfinite(r["peak_tensors_mb"]) and r["peak_tensors_mb"] > 0
        assert r["checkpointing_ratio"] == rows[1]["peak_tensors_mb"] / rows[0]["peak_tensors_mb"]
