"""train_net.py end to end with Mask2Former (the demo-seg config on a tiny
generated split): train, checkpoint, eval-only (mIoU), resume."""
import json
import os

import pytest
import torch

import train_net
from conftest import REPO_ROOT
from detectron2.engine import default_argument_parser

CONFIG = os.path.join(REPO_ROOT, "tests", "configs", "demo_seg_mask2former_small.py")
TINY = [
    "dataloader.train.total_batch_size=2",
    "dataloader.train.num_workers=0",
    "dataloader.test.num_workers=0",
    "train.log_period=1",
    "train.eval_period=0",
]


def _args(*argv):
    return default_argument_parser().parse_args(["--config-file", CONFIG, *argv])


def _iterations(metrics_file):
    with open(metrics_file) as f:
        return [json.loads(line)["iteration"] for line in f if '"total_loss"' in line]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Train 3 iterations (checkpoint every 2): (output_dir, results, datasets_dir)."""
    root = tmp_path_factory.mktemp("train_net_m2f")
    out = str(root / "out")
    mp = pytest.MonkeyPatch()
    mp.setenv("DETECTRON2_DATASETS", str(root / "datasets"))
    torch.manual_seed(0)
    results = train_net.main(_args(*TINY, "train.max_iter=3", "train.checkpointer.period=2",
                                   f"train.output_dir={out}"))
    yield out, results, str(root / "datasets")
    mp.undo()


def test_train_writes_checkpoints_losses_and_miou(trained):
    out, results, _ = trained
    assert {"mIoU", "fwIoU", "mACC", "pACC"} <= set(results["sem_seg"])
    assert _iterations(os.path.join(out, "metrics.json")) == [0, 1, 2]
    with open(os.path.join(out, "metrics.json")) as f:
        first = json.loads(next(line for line in f if '"total_loss"' in line))
    # deep supervision: 3 decoder layers -> 4 stages x (cls, mask, dice)
    assert {"loss_cls", "loss_mask", "loss_dice", "d0.loss_cls", "d2.loss_dice"} <= set(first)
    assert "d3.loss_cls" not in first
    ckpt = torch.load(os.path.join(out, "model_final.pth"), map_location="cpu", weights_only=False)
    assert ckpt["iteration"] == 2
    assert any(k.startswith("sem_seg_head.predictor.layers.2.cross_attn") for k in ckpt["model"])
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())


def test_eval_only_reproduces_the_final_evaluation(trained, monkeypatch, tmp_path):
    out, results, datasets = trained
    monkeypatch.setenv("DETECTRON2_DATASETS", datasets)
    again = train_net.main(_args("--eval-only", *TINY, f"train.init_checkpoint={os.path.join(out, 'model_final.pth')}",
                                 f"train.output_dir={tmp_path}"))
    assert again["sem_seg"]["mIoU"] == pytest.approx(results["sem_seg"]["mIoU"], abs=1e-6)


def test_resume_continues_from_the_last_checkpoint(trained, monkeypatch, tmp_path):
    out, _, datasets = trained
    monkeypatch.setenv("DETECTRON2_DATASETS", datasets)
    resumed = str(tmp_path / "resumed")
    os.makedirs(resumed)
    for f in ("model_0000001.pth", "last_checkpoint"):
        src = os.path.join(out, f)
        with open(src, "rb") as s, open(os.path.join(resumed, f), "wb") as d:
            d.write(s.read())
    with open(os.path.join(resumed, "last_checkpoint"), "w") as f:
        f.write("model_0000001.pth")
    train_net.main(_args("--resume", *TINY, "train.max_iter=4", f"train.output_dir={resumed}"))
    assert _iterations(os.path.join(resumed, "metrics.json")) == [2, 3]
