"""Interrupted runs resume to the same weights as uninterrupted ones.

Each run is a real `train_net.py` process on the tiny config
tests/configs/tiny_mask_rcnn_vit_adapter.py (ViT-Adapter Mask R-CNN, 64 px
demo images, batch 2, drop path on, random resize + flip), 6 iterations,
checkpoint every 2 (after iterations 1, 3, 5). Faults are injected by
tests/_fault_injection.py: SIGKILL after an iteration, or SIGKILL half-way
through writing a checkpoint.
"""
import os
import signal
import subprocess
import sys

import pytest
import torch
from conftest import REPO_ROOT


CONFIG = os.path.join(REPO_ROOT, "tests", "configs", "tiny_mask_rcnn_vit_adapter.py")
MAX_ITER = 6


@pytest.fixture(scope="module")
def datasets_root(tmp_path_factory):
    # The config's demo split is generated there by the first run and reused by the others.
    return str(tmp_path_factory.mktemp("d2datasets"))


def run_train_net(datasets_root, output_dir, *extra, fault="", timeout=300):
    env = dict(os.environ, DETECTRON2_DATASETS=datasets_root, VA_TEST_FAULT=fault)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")  # same float results in every run
    cmd = [
        sys.executable, os.path.join(REPO_ROOT, "tests", "_fault_injection.py"),
        "--config-file", CONFIG, *extra,
        f"train.output_dir={output_dir}", f"train.max_iter={MAX_ITER}", "train.checkpointer.period=2",
    ]
    return subprocess.run(cmd, env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout)


def final_state(output_dir):
    ckpt = torch.load(os.path.join(output_dir, "model_final.pth"), map_location="cpu", weights_only=False)
    return ckpt


def assert_same_weights(a, b):
    assert a["iteration"] == b["iteration"] == MAX_ITER - 1
    assert a["model"].keys() == b["model"].keys()
    different = [k for k in a["model"] if not torch.equal(a["model"][k], b["model"][k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:5]}"


@pytest.fixture(scope="module")
def uninterrupted(datasets_root, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("uninterrupted"))
    r = run_train_net(datasets_root, out)
    assert r.returncode == 0, r.stderr[-3000:]
    final = final_state(out)
    # Training changed the weights (a run that does nothing would "resume" perfectly too).
    first = torch.load(os.path.join(out, "model_0000001.pth"), map_location="cpu", weights_only=False)
    assert sum(not torch.equal(first["model"][k], final["model"][k]) for k in final["model"]) > 100
    return final


def test_sigkill_mid_training_then_resume(datasets_root, uninterrupted, tmp_path):
    out = str(tmp_path)
    r = run_train_net(datasets_root, out, fault="kill_after_iter:4")
    assert r.returncode == -signal.SIGKILL
    with open(os.path.join(out, "last_checkpoint")) as f:
        assert f.read().strip() == "model_0000003.pth"
    assert not os.path.exists(os.path.join(out, "model_final.pth"))

    r = run_train_net(datasets_root, out, "--resume")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Starting training from iteration 4" in r.stderr + r.stdout
    assert_same_weights(final_state(out), uninterrupted)


def test_sigkill_while_writing_checkpoint_then_resume(datasets_root, uninterrupted, tmp_path):
    out = str(tmp_path)
    r = run_train_net(datasets_root, out, fault="kill_during_save:3")
    assert r.returncode == -signal.SIGKILL
    # The half-written checkpoint never got its final name; last_checkpoint names a complete file.
    assert not os.path.exists(os.path.join(out, "model_0000003.pth"))
    with open(os.path.join(out, "last_checkpoint")) as f:
        last = f.read().strip()
    assert last == "model_0000001.pth"
    assert torch.load(os.path.join(out, last), map_location="cpu", weights_only=False)["iteration"] == 1

    r = run_train_net(datasets_root, out, "--resume")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Starting training from iteration 2" in r.stderr + r.stdout
    assert_same_weights(final_state(out), uninterrupted)
