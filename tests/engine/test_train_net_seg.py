"""train_net.py on a segmentation config: train -> evaluate (SemSegEvaluator) -> eval-only -> resume;
detectron2's own tools/lazyconfig_train_net.py on the same config."""
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

import train_net
from conftest import REPO_ROOT
from detectron2.engine import default_argument_parser

CONFIG = os.path.join(REPO_ROOT, "tests", "configs", "tiny_upernet_seg.py")


def _args(*argv):
    return default_argument_parser().parse_args(["--config-file", CONFIG, *argv])


def _iterations(metrics_file):
    with open(metrics_file) as f:
        return [json.loads(line)["iteration"] for line in f if '"total_loss"' in line]


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """One intra-op thread: tiny tensors on a shared CPU (threads only spin)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, _one_thread):
    root = tmp_path_factory.mktemp("train_net_seg")
    out = str(root / "out")
    mp = pytest.MonkeyPatch()
    mp.setenv("DETECTRON2_DATASETS", str(root / "datasets"))
    torch.manual_seed(0)
    results = train_net.main(_args(f"train.output_dir={out}"))
    yield out, results, str(root / "datasets")
    mp.undo()


def _assert_seg_metrics(results):
    assert {"mIoU", "fwIoU", "mACC", "pACC"} <= set(results["sem_seg"])
    assert 0 <= results["sem_seg"]["mIoU"] <= 100


def test_train_evaluates_and_checkpoints(trained):
    out, results, _ = trained
    _assert_seg_metrics(results)  # EvalHook's evaluation after the last iteration
    assert _iterations(os.path.join(out, "metrics.json")) == [0, 1, 2, 3]
    for f in ("model_0000001.pth", "model_final.pth", "last_checkpoint"):
        assert os.path.isfile(os.path.join(out, f)), f


def test_eval_only(trained, monkeypatch, tmp_path):
    out, results, datasets = trained
    monkeypatch.setenv("DETECTRON2_DATASETS", datasets)
    again = train_net.main(
        _args("--eval-only", f"train.init_checkpoint={os.path.join(out, 'model_final.pth')}",
              f"train.output_dir={tmp_path}")
    )
    assert again["sem_seg"]["mIoU"] == pytest.approx(results["sem_seg"]["mIoU"])


def test_resume_ends_with_the_uninterrupted_weights(trained, monkeypatch, tmp_path):
    out, _, datasets = trained
    monkeypatch.setenv("DETECTRON2_DATASETS", datasets)
    resumed = str(tmp_path / "resumed")
    os.makedirs(resumed)
    shutil.copy(os.path.join(out, "model_0000001.pth"), resumed)
    with open(os.path.join(resumed, "last_checkpoint"), "w") as f:
        f.write("model_0000001.pth")
    train_net.main(_args("--resume", f"train.output_dir={resumed}"))
    assert _iterations(os.path.join(resumed, "metrics.json")) == [2, 3]
    a = torch.load(os.path.join(out, "model_final.pth"), map_location="cpu", weights_only=False)["model"]
    b = torch.load(os.path.join(resumed, "model_final.pth"), map_location="cpu", weights_only=False)["model"]
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)


def test_detectron2_lazyconfig_train_net(trained, tmp_path):
    """detectron2's own trainer (tools/lazyconfig_train_net.py of the vendored main source) runs
    the config unchanged: one iteration, a checkpoint and its final SemSegEvaluator evaluation."""
    import glob
    import tarfile

    vendored = glob.glob(os.path.join(REPO_ROOT, "..", "..", "shared", "vendor", "detectron2-main-*.tar.gz"))
    vendored += glob.glob("/work/shared/vendor/detectron2-main-*.tar.gz")
    if not vendored:
        pytest.skip("no vendored detectron2 source (tools/lazyconfig_train_net.py) here")
    with tarfile.open(vendored[0]) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith("tools/lazyconfig_train_net.py"))
        script = tmp_path / "lazyconfig_train_net.py"
        script.write_bytes(tar.extractfile(member).read())
    env = {**os.environ, "DETECTRON2_DATASETS": trained[2], "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    base = [sys.executable, str(script), "--config-file", CONFIG]
    out = str(tmp_path / "d2")
    proc = subprocess.run(base + ["train.max_iter=1", "train.device=cpu", f"train.output_dir={out}"],
                          capture_output=True, text=True, env=env, cwd=REPO_ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert os.path.isfile(os.path.join(out, "model_final.pth"))
    assert "mIoU" in proc.stdout + proc.stderr  # its EvalHook's evaluation after the last iteration


def test_predict_draws_label_maps(trained, tmp_path):
    """tools/predict.py on the segmentation config: one colour overlay per image, at its size."""
    import numpy as np
    from PIL import Image

    from vit_adapter.tools import predict

    out, _, datasets = trained
    val_dir = os.path.join(datasets, "vit_adapter_demo_seg", "images", "val")
    written = predict.main(["--config-file", CONFIG, "--weights", os.path.join(out, "model_final.pth"),
                            "--input", val_dir, "--output", str(tmp_path / "vis")])
    assert [os.path.basename(p) for p in written] == ["000000.png", "000001.png"]
    source = np.asarray(Image.open(os.path.join(val_dir, "000000.jpg")).convert("RGB"))
    with Image.open(written[0]) as im:
        drawn = np.asarray(im.convert("RGB"))
    assert drawn.shape == source.shape and not np.array_equal(drawn, source)  # the label map is drawn over it


def test_run_demo_seg_trains_evaluates_and_draws(trained, monkeypatch, tmp_path):
    """make demo-seg's tool on the tiny config: mIoU printed and stored, overlays drawn."""
    from vit_adapter.tools import run_demo_seg

    monkeypatch.setenv("DETECTRON2_DATASETS", trained[2])
    summary = run_demo_seg.main(["--config-file", CONFIG, "--num-vis", "2", "train.max_iter=2",
                                 f"train.output_dir={tmp_path}"])
    assert summary["max_iter"] == 2 and 0 <= summary["mIoU"] <= 100
    assert set(summary["IoU"]) == {"background", "circle", "square", "triangle"}
    assert len(summary["visualisations"]) == 2 and all(os.path.isfile(p) for p in summary["visualisations"])
    with open(os.path.join(tmp_path, "demo_seg_summary.json")) as f:
        assert json.load(f)["mIoU"] == summary["mIoU"]
