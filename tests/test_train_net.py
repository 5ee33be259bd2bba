"""train_net.py end to end on the demo config with a tiny generated split: train, checkpoint, eval-only, resume."""
import json
import os
import subprocess
import sys

import pytest
import torch

import train_net
from detectron2.engine import default_argument_parser

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The demo config with a 4 / 2 image split of 96 px (registered when the config loads).
DEMO_CONFIG = os.path.join(REPO_ROOT, "tests", "configs", "demo_small_data.py")
# No worker processes, every iteration logged.
TINY = [
    "dataloader.train.total_batch_size=2",
    "dataloader.train.num_workers=0",
    "dataloader.test.num_workers=0",
    "train.log_period=1",
    "train.eval_period=0",
]


def _args(*argv):
    return default_argument_parser().parse_args(["--config-file", DEMO_CONFIG, *argv])


def _iterations(metrics_file):
    with open(metrics_file) as f:
        return [json.loads(line)["iteration"] for line in f if '"total_loss"' in line]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Train 3 iterations (checkpoint every 2) and return (output_dir, results, datasets_dir)."""
    root = tmp_path_factory.mktemp("train_net")
    out = str(root / "out")
    mp = pytest.MonkeyPatch()
    mp.setenv("DETECTRON2_DATASETS", str(root / "datasets"))
    torch.manual_seed(0)
    results = train_net.main(
        _args(*TINY, "train.max_iter=3", "train.checkpointer.period=2", f"train.output_dir={out}")
    )
    yield out, results, str(root / "datasets")
    mp.undo()


def _assert_coco_metrics(results):
    for task in ("bbox", "segm"):
        assert {"AP", "AP50", "AP75", "APs", "APm", "APl"} <= set(results[task]), task


def test_train_writes_checkpoint_logs_and_metrics(trained):
    out, results, datasets = trained
    _assert_coco_metrics(results)  # the final evaluation of EvalHook
    assert os.path.isfile(os.path.join(datasets, "vit_adapter_demo", "annotations", "instances_val.json"))
    for f in ("model_0000001.pth", "model_final.pth", "last_checkpoint", "metrics.json", "log.txt", "config.yaml"):
        assert os.path.isfile(os.path.join(out, f)), f
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(out))
    assert _iterations(os.path.join(out, "metrics.json")) == [0, 1, 2]
    with open(os.path.join(out, "log.txt")) as f:
        log = f.read()
    assert "eta:" in log and "total_loss" in log
    ckpt = torch.load(os.path.join(out, "model_final.pth"), map_location="cpu", weights_only=False)
    assert ckpt["iteration"] == 2 and "model" in ckpt
    assert "optimizer" in ckpt or "optimizer" in ckpt.get("trainer", {})
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())


def test_eval_only(trained, monkeypatch, tmp_path):
    out, _, datasets = trained
    monkeypatch.setenv("DETECTRON2_DATASETS", datasets)
    results = train_net.main(
        _args(
            "--eval-only",
            *TINY,
            f"train.init_checkpoint={os.path.join(out, 'model_final.pth')}",
            f"train.output_dir={tmp_path}",
        )
    )
    _assert_coco_metrics(results)


def test_resume_continues_from_saved_iteration(trained, monkeypatch, tmp_path):
    out, _, datasets = trained
    monkeypatch.setenv("DETECTRON2_DATASETS", datasets)
    resumed = str(tmp_path / "resumed")
    os.makedirs(resumed)
    for f in ("model_final.pth", "metrics.json"):
        with open(os.path.join(out, f), "rb") as src, open(os.path.join(resumed, f), "wb") as dst:
            dst.write(src.read())
    with open(os.path.join(resumed, "last_checkpoint"), "w") as f:
        f.write("model_final.pth")
    train_net.main(_args("--resume", *TINY, "train.max_iter=5", f"train.output_dir={resumed}"))
    # iterations 0-2 from the first run, then 3 and 4: none repeated, none skipped
    assert _iterations(os.path.join(resumed, "metrics.json")) == [0, 1, 2, 3, 4]
    ckpt = torch.load(os.path.join(resumed, "model_final.pth"), map_location="cpu", weights_only=False)
    assert ckpt["iteration"] == 4


def test_eval_only_without_weights_is_a_clear_error(trained, monkeypatch, tmp_path):
    monkeypatch.setenv("DETECTRON2_DATASETS", trained[2])
    with pytest.raises(train_net.ConfigError, match="--eval-only needs weights"):
        train_net.main(_args("--eval-only", *TINY, f"train.output_dir={tmp_path}"))
    with pytest.raises(Exception, match="not found: .*missing.pth"):
        train_net.main(
            _args("--eval-only", *TINY, f"train.init_checkpoint={tmp_path}/missing.pth", f"train.output_dir={tmp_path}")
        )


def _cli(*argv, env=None):
    return subprocess.run(
        [sys.executable, os.path.join(REPO_ROOT, "train_net.py"), *argv],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env={**os.environ, **(env or {})},
        timeout=300,
    )


def test_cli_missing_config_is_one_line_error():
    proc = _cli("--config-file", "configs/does_not_exist.py")
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last == "train_net.py: error: config file not found: configs/does_not_exist.py"
    assert "Traceback" not in proc.stderr


def test_cli_broken_dataset_is_one_line_error(trained, tmp_path):
    _, _, datasets = trained
    # a copy of the tiny demo dataset with one val image removed
    broken = tmp_path / "datasets" / "vit_adapter_demo"
    src = os.path.join(datasets, "vit_adapter_demo")
    for dirpath, _, files in os.walk(src):
        rel = os.path.relpath(dirpath, src)
        os.makedirs(broken / rel, exist_ok=True)
        for f in files:
            (broken / rel / f).write_bytes(open(os.path.join(dirpath, f), "rb").read())
    os.remove(broken / "train" / "000001.jpg")
    proc = _cli(
        "--config-file", DEMO_CONFIG, *TINY, "train.max_iter=1", f"train.output_dir={tmp_path / 'out'}",
        env={"DETECTRON2_DATASETS": str(tmp_path / "datasets")},
    )
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("train_net.py: error: ") and "image file not found" in last and "000001.jpg" in last
    assert "Traceback" not in proc.stderr


# --- tools/predict.py on the checkpoint trained above ---------------------------------------


def test_predict_writes_visualisations(trained, tmp_path):
    from PIL import Image

    from vit_adapter.tools import predict

    out, _, datasets = trained
    val_dir = os.path.join(datasets, "vit_adapter_demo", "val")
    written = predict.main(
        [
            "--config-file", DEMO_CONFIG,
            "--weights", os.path.join(out, "model_final.pth"),
            "--input", val_dir,
            "--output", str(tmp_path / "vis"),
            "--score-threshold", "0.0",
        ]
    )
    assert [os.path.basename(p) for p in written] == ["000000.png", "000001.png"]
    for p in written:
        with Image.open(p) as im:
            assert im.size == (96, 96) and im.mode == "RGB"


def test_predict_bad_inputs(trained, tmp_path):
    from vit_adapter.tools import predict

    out, _, _ = trained
    weights = os.path.join(out, "model_final.pth")
    base = ["--config-file", DEMO_CONFIG, "--weights", weights, "--output", str(tmp_path / "o")]
    with pytest.raises(predict.PredictError, match=r"image file not found: .*nope\.jpg"):
        predict.main(base + ["--input", str(tmp_path / "nope.jpg")])
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    with pytest.raises(predict.PredictError, match=r"bad\.jpg is corrupt or not an image"):
        predict.main(base + ["--input", str(bad)])
    (tmp_path / "empty").mkdir()
    with pytest.raises(predict.PredictError, match="no image files"):
        predict.main(base + ["--input", str(tmp_path / "empty")])
    with pytest.raises(predict.PredictError, match="checkpoint file not found"):
        predict.main(["--config-file", DEMO_CONFIG, "--weights", str(tmp_path / "w.pth"), "--input", str(bad)])
    with pytest.raises(predict.PredictError, match="config file not found"):
        predict.main(["--config-file", "nope.py", "--weights", weights, "--input", str(bad)])


def test_cli_checks_run_before_worker_processes_start(tmp_path):
    # --num-gpus 2 without CUDA would start 2 gloo processes: a wrong class count must stop
    # in the launching process, with one line, before any worker exists (issue 16 items 5-6).
    proc = _cli(
        "--config-file", DEMO_CONFIG, "--num-gpus", "2", *TINY, "model.roi_heads.num_classes=5",
        "train.device=cpu", f"train.output_dir={tmp_path / 'out'}",
        env={"DETECTRON2_DATASETS": str(tmp_path / "datasets")},
    )
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("train_net.py: error: model.roi_heads.num_classes=5 but dataset"), last
    assert "has 3 classes" in last and "Traceback" not in proc.stderr and "gloo" not in proc.stderr
