"""tools/benchmark.py --quick --sections mask2former: the memory row runs and
reports its columns (structure and sanity only; no timing or size assertions
beyond positivity)."""
import json
import math
import os
import subprocess
import sys

from conftest import REPO_ROOT


def test_mask2former_memory_row_quick(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, os.path.join(REPO_ROOT, "tools", "benchmark.py"), "--quick", "--sections", "mask2former",
         "--device", "cpu", "--threads", "1", "--json", str(out)],
        capture_output=True, text=True, cwd=REPO_ROOT, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "== 8. BEiT-Adapter-L + Mask2Former, one training step at 64x64" in proc.stdout
    rows = json.load(open(out))["mask2former"]
    assert [r["checkpoint_pixel_decoder"] for r in rows] == [False, True]
    for r in rows:
        assert r["side"] == 64
        for key in ("peak_tensors_mb", "peak_rss_mb", "state_mb"):
            assert math.isfinite(r[key]) and r[key] > 0, key
        assert set(r["kept_mb"]) == {"backbone", "pixel decoder", "decoder", "losses"}
