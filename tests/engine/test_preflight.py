"""Start-up checks of a run (vit_adapter.engine.preflight; issue 16 items 5, 8-11):
one-line SetupErrors before anything is built or any process is spawned."""
import os

import pytest
import torch
from detectron2.config import LazyConfig
from omegaconf import OmegaConf

from vit_adapter.checkpoint.checkpointer import CheckpointError, ViTAdapterCheckpointer
from vit_adapter.engine.overrides import apply_overrides
from vit_adapter.engine.preflight import (
    SetupError,
    check_batch_size,
    check_device,
    check_last_checkpoint,
    check_num_classes,
    check_optimizer,
)
from conftest import REPO_ROOT

DEMO_CONFIG = os.path.join(REPO_ROOT, "configs", "demo", "mask_rcnn_vit_adapter_demo.py")


def _one_line_error(fn, *args, match, **kwargs):
    with pytest.raises(SetupError, match=match) as e:
        fn(*args, **kwargs)
    assert "\n" not in str(e.value)
    return str(e.value)


@pytest.mark.parametrize("device", ["cpu", "cuda", "cuda:0", "cuda:3"])
def test_devices_accepted(device):
    check_device(device)


@pytest.mark.parametrize("device", ["gpu", "cuda:x", "cpu:0:1", "", "tpu"])
def test_device_typo_is_one_line(device):
    msg = _one_line_error(check_device, device, match="is not a device")
    assert "train.device=cuda" in msg and "train.device=cpu" in msg


@pytest.fixture(scope="module")
def demo_cfg():
    return LazyConfig.load(DEMO_CONFIG)


def test_optimizer_of_the_demo_config_passes(demo_cfg):
    check_optimizer(demo_cfg.optimizer)


@pytest.mark.parametrize(
    "override, match",
    [
        ("optimizer.lr=-1", r"optimizer.lr=-1(\.0)?: the learning rate must be a positive"),
        ("optimizer.lr=0", "optimizer.lr=0"),
        ("optimizer.lr=nan", "optimizer.lr=nan"),
        ("optimizer.weight_decay=-0.1", "optimizer.weight_decay=-0.1: must be a finite number >= 0"),
        ("optimizer.betas=[0.9,1.5]", r"optimizer.betas=\[0.9, 1.5\]: must be two numbers in \[0, 1\)"),
    ],
)
def test_bad_optimizer_values_are_one_line(demo_cfg, override, match):
    cfg = apply_overrides(LazyConfig.load(DEMO_CONFIG), [override])
    _one_line_error(check_optimizer, cfg.optimizer, match=match)


def test_torch_refuses_what_check_optimizer_refuses():
    # The check mirrors torch's own (which fails deep in instantiate with a traceback).
    with pytest.raises(ValueError, match="Invalid learning rate"):
        torch.optim.AdamW([torch.zeros(1, requires_grad=True)], lr=-1)


@pytest.mark.parametrize(
    "total, workers, world, match",
    [
        (0, 1, 1, "total_batch_size=0: must be a positive number"),
        (-2, 1, 1, "total_batch_size=-2"),
        (3, 1, 2, "total_batch_size=3 is not a multiple of the 2 processes"),
        (2, -1, 1, "num_workers=-1"),
    ],
)
def test_bad_batch_size_is_one_line(total, workers, world, match):
    loader = OmegaConf.create({"total_batch_size": total, "num_workers": workers})
    _one_line_error(check_batch_size, loader, world_size=world, match=match)


def test_good_batch_size_passes(demo_cfg):
    check_batch_size(demo_cfg.dataloader.train, world_size=2)


def test_num_classes_checked_both_ways():
    classes = {"val": ["circle", "square", "triangle"], "unknown": None}
    check_num_classes(3, classes)
    msg = _one_line_error(check_num_classes, 5, classes, match="model.roi_heads.num_classes=5 but dataset 'val'")
    assert "has 3 classes (circle, square, triangle)" in msg and msg.endswith("set model.roi_heads.num_classes=3")
    _one_line_error(check_num_classes, 2, classes, match="num_classes=2 but dataset 'val' has 3 classes")


def test_last_checkpoint_that_is_a_folder_is_refused(tmp_path):
    (tmp_path / "last_checkpoint").mkdir()
    msg = _one_line_error(check_last_checkpoint, str(tmp_path), match="last_checkpoint is a folder")
    assert "cannot resume" in msg
    # The checkpointer refuses too (detectron2 would train from scratch with a resumed schedule).
    checkpointer = ViTAdapterCheckpointer(torch.nn.Linear(1, 1), str(tmp_path))
    with pytest.raises(CheckpointError, match="last_checkpoint is not a file"):
        checkpointer.resume_or_load("", resume=True)
