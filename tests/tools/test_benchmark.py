"""tools/benchmark.py --quick runs end to end and reports every section.

Structure and sanity only: no timing assertions (the CI machine is shared).
"""
import json
import math
import os
import subprocess
import sys

import pytest
import torch
from conftest import REPO_ROOT


SCRIPT = os.path.join(REPO_ROOT, "tools", "benchmark.py")


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    proc = subprocess.run(
        [sys.executable, SCRIPT, "--quick", "--device", "cpu", "--threads", "1", "--clock", "process",
         "--json", str(out)],
        capture_output=True, text=True, cwd=REPO_ROOT, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(out) as f:
        return proc.stdout, json.load(f)


def _positive(x):
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def test_prints_every_section(quick_run):
    stdout, _ = quick_run
    for title in ("== 1. deformable attention", "== 2. backbone inference", "== 3. Mask R-CNN",
                  "== 4. parameters (M) and fvcore GMACs"):
        assert title in stdout
    assert "device=cpu" in stdout and "threads=1" in stdout and "clock=process" in stdout and "load_avg=" in stdout


def test_msda_section(quick_run):
    _, res = quick_run
    rows = res["msda"]
    got = {(r["side"], r["layer"], r["pass_"]) for r in rows}
    assert got == {(s, l, p) for s in (64, 128) for l in ("injector", "extractor") for p in ("fwd", "fwd+bwd")}
    for r in rows:
        assert r["impl"] == "embedding_bag"  # the CPU choice of the dispatcher
        assert _positive(r["reference_ms"]) and _positive(r["ours_ms"]) and _positive(r["speedup"])
        assert r["max_abs_diff"] < 1e-4  # both sides computed the same thing


def test_backbone_section(quick_run):
    _, res = quick_run
    pairs = res["backbone"]["pairs"]
    assert [p["name"] for p in pairs] == [
        "ViT-Adapter-S / ViT-S (patch embed + blocks)",
        "ViT-Adapter-S + FPN / ViT-S + SimpleFeaturePyramid",
    ]
    for p in pairs:
        assert _positive(p["adapter_ms"]) and _positive(p["baseline_ms"])
        assert p["ratio"] == pytest.approx(p["ratio_range"][0])  # one repeat in --quick


def test_detector_section_runs_each_measurement_in_its_own_process(quick_run):
    _, res = quick_run
    rows = res["detector"]
    assert [(r["size"], r["mode"], r["with_cp"]) for r in rows] == [
        ("T", "inference", False), ("T", "train", False), ("T", "train", True)]
    for r in rows:
        assert r["memory"] == "peak RSS"
        assert _positive(r["ms"]) and _positive(r["peak_mb"])
        # Peak RSS of a process that imported torch and built a model: sane bounds.
        assert 100 < r["peak_mb"] < 64 * 1024
        assert r["peak_mb"] >= r["base_mb"]
        # Linux: peak of the timed steps above the resident weights + grads + optimizer state.
        assert r["act_peak_mb"] >= 0 and r["peak_mb"] >= r["state_mb"] > 0
    # Live tensor bytes (profiler-counted on CPU): a training step holds
    # gradients, AdamW state and activations on top of what inference needs.
    assert 0 < rows[0]["peak_tensors_mb"] < rows[1]["peak_tensors_mb"]
    assert rows[2]["peak_tensors_mb"] > 0
    ratios = rows[1]["checkpointing_ratios"]
    assert set(ratios) == {"peak_tensors", "peak", "step_peak", "act_peak", "time"}
    assert _positive(ratios["peak"]) and _positive(ratios["peak_tensors"])


def test_flops_section_counts_the_deformable_op(quick_run):
    _, res = quick_run
    (row,) = res["flops"]
    assert row["size"] == "T"
    assert row["deform_attn_gmacs"] > 0  # the explicit handle fired
    assert "prim::PythonOp._BilinearGatherSum" not in row["uncounted_ops"]
    assert "aten::scaled_dot_product_attention" not in row["uncounted_ops"]
    parts = row["vit_gmacs"] + row["adapter_gmacs"] + row["fpn_gmacs"]
    assert parts == pytest.approx(row["backbone_fpn_gmacs"], rel=1e-6)
    assert row["detector_params_m"] > row["backbone_params_m"] > 0


def test_flop_handle_matches_the_formula():
    """N * Lq * M * L * P * 4 * Dh multiply-adds for one deformable attention call."""
    from vit_adapter.analysis import count_flops
    from vit_adapter.layers.ms_deform_attn import MSDeformAttn

    class Wrap(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = MSDeformAttn(d_model=16, n_levels=2, n_heads=4, n_points=3)

        def forward(self, q, ref, feat):
            shapes = torch.tensor([[4, 6], [2, 3]])
            return self.attn(q, ref, feat, shapes, torch.tensor([0, 24]))

    q, ref, feat = torch.randn(2, 5, 16), torch.rand(2, 5, 2, 2), torch.randn(2, 30, 16)
    flops = count_flops(Wrap(), (q, ref, feat))
    assert flops["by_operator"]["PythonOp._BilinearGatherSum"] == 2 * 5 * 4 * 2 * 3 * 4 * (16 // 4)


def test_bad_arguments_fail_cleanly():
    proc = subprocess.run([sys.executable, SCRIPT, "--sections", "nope"], capture_output=True, text=True, cwd=REPO_ROOT)
    assert proc.returncode == 2 and "invalid choice" in proc.stderr


def test_deploy_section(quick_run):
    pytest.importorskip("onnxruntime", reason="needs the deploy extra")
    stdout, res = quick_run
    assert "== deploy: onnxruntime (and OpenVINO) / PyTorch eager" in stdout
    assert [r["model"] for r in res["deploy"]["detector"]] == ["demo (tiny widths)", "ViT-Adapter-S (tiny widths)"]
    for r in res["deploy"]["detector"]:
        assert _positive(r["ort_ms"]) and _positive(r["torch_ms"]) and _positive(r["ratio"])
    for r in res["deploy"]["msda"]:
        assert r["max_abs_diff"] < 1e-4 and _positive(r["ratio"])  # both formulations compute the same
