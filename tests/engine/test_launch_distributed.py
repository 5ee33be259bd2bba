"""`train_net.py --num-gpus 2 train.device=cpu`: two gloo processes with DDP.

Trains the demo config, shrunk by tests/configs/demo_tiny.py (SyncBN in the
adapter), for 4 iterations with DDP's `find_unused_parameters=False` (the
demo's setting: DDP fails if any parameter gets no gradient). Every rank then
dumps its weights (tests/_fault_injection.py "dump_weights").
"""
import json
import os
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist
from torch import nn

from vit_adapter.engine.launch import convert_sync_batchnorm, create_ddp_model, infer_device
from conftest import REPO_ROOT




@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory):
    from vit_adapter.data import prepare_demo_dataset

    root = tmp_path_factory.mktemp("d2datasets")
    prepare_demo_dataset(str(root / "vit_adapter_demo"), num_train=8, num_val=2, image_size=64)  # as demo_tiny.py
    out = str(tmp_path_factory.mktemp("ddp"))
    env = dict(os.environ, DETECTRON2_DATASETS=str(root), VA_TEST_FAULT=f"dump_weights:{out}")
    cmd = [
        sys.executable, os.path.join(REPO_ROOT, "tests", "_fault_injection.py"), "--num-gpus", "2",
        "--config-file", os.path.join(REPO_ROOT, "tests", "configs", "demo_tiny.py"),
        f"train.output_dir={out}", "train.device=cpu", "train.ddp.find_unused_parameters=False",
    ]
    r = subprocess.run(cmd, env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=400)
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    return [torch.load(os.path.join(out, f"rank{i}.pth"), map_location="cpu", weights_only=False) for i in range(2)], out


def test_both_ranks_train_and_hold_identical_weights(two_process_run):
    (rank0, rank1), out = two_process_run
    assert rank0["world_size"] == rank1["world_size"] == 2
    assert rank0["model"].keys() == rank1["model"].keys()
    different = [k for k in rank0["model"] if not torch.equal(rank0["model"][k], rank1["model"][k])]
    assert not different, f"ranks differ in {different[:5]}"
    # 4 logged training iterations, then the demo's COCO evaluation ran across both processes.
    with open(os.path.join(out, "metrics.json")) as f:
        lines = [json.loads(line) for line in f]
    assert [m["iteration"] for m in lines if "total_loss" in m] == [0, 1, 2, 3]
    assert any("bbox/AP" in m for m in lines)


def test_every_parameter_gets_a_gradient_and_syncbn_is_synchronised(two_process_run):
    (rank0, _), _ = two_process_run
    assert rank0["no_grad"] == []
    # "SyncBN" in the adapter became a CPU-capable synchronised BatchNorm, not plain BN.
    assert "NaiveSyncBatchNorm" in rank0["norm_types"]
    assert "SyncBatchNorm" not in rank0["norm_types"] and "BatchNorm2d" not in rank0["norm_types"]


def test_convert_sync_batchnorm_keeps_state():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.SyncBatchNorm(4), nn.Sequential(nn.SyncBatchNorm(4)))
    for m in model.modules():
        if isinstance(m, nn.SyncBatchNorm):
            m.weight.data.uniform_()
            m.running_mean.uniform_()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model = convert_sync_batchnorm(model)
    names = [type(m).__name__ for m in model.modules()]
    assert "SyncBatchNorm" not in names and names.count("NaiveSyncBatchNorm") == 2
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_create_ddp_model_refuses_syncbn_on_cpu(monkeypatch):
    from detectron2.utils import comm

    monkeypatch.setattr(comm, "get_world_size", lambda: 2)
    with pytest.raises(ValueError, match="convert_sync_batchnorm"):
        create_ddp_model(nn.Sequential(nn.SyncBatchNorm(2)), "cpu")
    assert not dist.is_initialized()


def test_infer_device():
    assert infer_device(["train.device=cpu"]) == "cpu"
    assert infer_device(["train.max_iter=3", "train.device='cuda'"]) == "cuda"
    assert infer_device([]) == ("cuda" if torch.cuda.is_available() else "cpu")
