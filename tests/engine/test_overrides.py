"""Configs and command lines (issue 16, rows 15-16 of docs/robustness.md).

Strict overrides (`vit_adapter.engine.overrides`), the output-folder and
`last_checkpoint` checks (`vit_adapter.engine.preflight`), and a full disk
during a save, through `train_net.py` as users run it.
"""
import errno
import os
import subprocess
import sys

import pytest

from detectron2.config import LazyConfig

from vit_adapter.engine.overrides import OverrideError, apply_overrides, check_lazy_calls
from vit_adapter.engine.preflight import (
    SetupError,
    check_last_checkpoint,
    check_output_dir,
    disk_full_message,
)
from conftest import REPO_ROOT


TINY_CONFIG = os.path.join(REPO_ROOT, "tests", "configs", "tiny_mask_rcnn_vit_adapter.py")


@pytest.fixture
def cfg():
    return LazyConfig.load(TINY_CONFIG)


def error_of(cfg, *opts):
    with pytest.raises(OverrideError) as e:
        apply_overrides(cfg, list(opts))
        check_lazy_calls(cfg)
    msg = str(e.value)
    assert "\n" not in msg
    return msg


# ------------------------------------------------------------------ row 15: typos
def test_unknown_key_is_an_error_with_did_you_mean(cfg):
    msg = error_of(cfg, "train.max_itr=1")
    assert "unknown config key 'train.max_itr'" in msg and "did you mean 'train.max_iter'" in msg
    assert cfg.train.max_iter == 10 and "max_itr" not in cfg.train


@pytest.mark.parametrize(
    "yacs, lazy",
    [("MODEL.WEIGHTS", "train.init_checkpoint"), ("SOLVER.MAX_ITER", "train.max_iter"),
     ("SOLVER.BASE_LR", "optimizer.lr"), ("SOLVER.IMS_PER_BATCH", "dataloader.train.total_batch_size"),
     ("OUTPUT_DIR", "train.output_dir")],
)
def test_yacs_keys_name_their_lazyconfig_key(cfg, yacs, lazy):
    assert f"its LazyConfig name is '{lazy}'" in error_of(cfg, f"{yacs}=1")


def test_known_keys_constructor_arguments_and_explicit_new_keys_are_accepted(cfg):
    apply_overrides(cfg, ["train.max_iter=3", "optimizer.lr=1", "model.backbone.bottom_up.with_cp=true",
                          "+train.note=hello", "train.output_dir=2024", "dataloader.train.mapper.image_format=BGR"])
    check_lazy_calls(cfg)
    assert cfg.train.max_iter == 3 and cfg.optimizer.lr == 1.0 and isinstance(cfg.optimizer.lr, float)
    assert cfg.model.backbone.bottom_up.with_cp is True and cfg.train.note == "hello"
    assert cfg.train.output_dir == "2024"
    apply_overrides(cfg, ["train.brand_new=1"], allow_new_keys=True)
    assert cfg.train.brand_new == 1


# ------------------------------------------------------------------ row 16: tracebacks -> one line
def test_constructor_argument_typo_names_the_target_and_its_argument(cfg):
    msg = error_of(cfg, "model.backbone.bottom_up.emebd_dim=10")
    assert "ViTAdapter has no argument 'emebd_dim'" in msg and "did you mean 'embed_dim'" in msg
    # through a **kwargs subclass: RobustDatasetMapper -> DatasetMapper's arguments
    assert "RobustDatasetMapper has no argument 'image_fromat'" in error_of(
        cfg, "dataloader.train.mapper.image_fromat=RGB")


def test_constructor_argument_typo_in_a_config_file_is_caught_before_instantiate(cfg):
    cfg.model.backbone.bottom_up.emebd_dim = 10  # as a typo in the .py config would
    with pytest.raises(OverrideError, match=r"'model.backbone.bottom_up.emebd_dim'.*did you mean 'embed_dim'"):
        check_lazy_calls(cfg)


@pytest.mark.parametrize(
    "opt, needle",
    [("train.max_iter=abc", "expects an integer"), ("train.max_iter=1.5", "expects an integer"),
     ("train.amp.enabled=1", "expects true or false"), ("optimizer.lr=fast", "expects a number"),
     ("model.roi_heads=3", "is a config node"), ("train.max_iter", "is not key=value"),
     ("train.max_iter=[1", "cannot parse")],
)
def test_wrong_value_types_and_malformed_overrides(cfg, opt, needle):
    assert needle in error_of(cfg, opt)


def test_flag_after_the_overrides_is_reported(cfg):
    msg = error_of(cfg, "train.max_iter=2", "--resume")
    assert "option '--resume' comes after the key=value overrides" in msg


def test_output_dir_under_a_file_or_in_proc(tmp_path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(SetupError, match="is a file"):
        check_output_dir(str(tmp_path / "afile" / "out"))
    with pytest.raises(SetupError, match="cannot write to train.output_dir /proc/"):
        check_output_dir("/proc/vit_adapter_out")
    check_output_dir(str(tmp_path / "new" / "out"))
    assert (tmp_path / "new" / "out").is_dir()


@pytest.mark.parametrize(
    "content, needle",
    [(b"\xff\xfe\x00bad", "is not UTF-8 text"), (b"", "is empty"), (b"sub\n", "names a folder"),
     (b"model_0000009.pth\n", "does not exist")],
)
def test_bad_last_checkpoint_is_refused_before_resuming(tmp_path, content, needle):
    (tmp_path / "sub").mkdir()
    (tmp_path / "last_checkpoint").write_bytes(content)
    with pytest.raises(SetupError, match=needle):
        check_last_checkpoint(str(tmp_path))
    (tmp_path / "model_0000009.pth").write_bytes(b"x")
    (tmp_path / "last_checkpoint").write_text("model_0000009.pth")
    check_last_checkpoint(str(tmp_path))  # a file: fine


def test_disk_full_message():
    msg = disk_full_message(OSError(errno.ENOSPC, "No space left on device"), "out/")
    assert msg.startswith("no space left on device while writing out/") and "--resume" in msg
    assert disk_full_message(OSError(errno.ENOENT, "nope"), "out/") is None
    assert disk_full_message(ValueError("x"), "out/") is None


# ------------------------------------------------------------------ the real command
def run_train_net(tmp_path, *args, fault=""):
    from vit_adapter.data import generate_demo_dataset

    root = tmp_path / "datasets"
    generate_demo_dataset(str(root / "vit_adapter_demo"), num_train=4, num_val=1, image_size=64)
    env = dict(os.environ, DETECTRON2_DATASETS=str(root), VA_TEST_FAULT=fault, OMP_NUM_THREADS="1")
    cmd = [sys.executable, os.path.join(REPO_ROOT, "tests", "_fault_injection.py"), "--config-file", TINY_CONFIG,
           f"train.output_dir={tmp_path / 'out'}", *args]
    r = subprocess.run(cmd, env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    last = r.stderr.strip().splitlines()[-1] if r.stderr.strip() else ""
    return r, last


def test_train_net_typo_is_one_line_error_before_training(tmp_path):
    r, last = run_train_net(tmp_path, "train.max_itr=1")
    assert r.returncode == 1 and last.startswith("train_net.py: error: unknown config key 'train.max_itr'"), last
    assert "Traceback" not in r.stderr and not (tmp_path / "out" / "metrics.json").exists()


def test_train_net_full_disk_during_a_save_is_one_line(tmp_path):
    r, last = run_train_net(tmp_path, "train.max_iter=4", fault="disk_full_at_save:2")
    assert r.returncode == 1, r.stderr[-2000:]
    assert last.startswith("train_net.py: error: no space left on device while writing"), last
    assert os.path.exists(tmp_path / "out" / "model_0000002.pth") is False


def test_predict_overrides_are_strict_and_misplaced_ones_are_named(tmp_path):
    from vit_adapter.tools.predict import PredictError, list_images
    from vit_adapter.tools.predict import main as predict_main

    demo = os.path.join(REPO_ROOT, "configs", "demo", "mask_rcnn_vit_adapter_demo.py")
    weights = tmp_path / "w.pth"
    weights.write_bytes(b"never read")
    img = tmp_path / "a.png"
    img.write_bytes(b"never read")
    base = ["--config-file", demo, "--weights", str(weights), "--input", str(img), "--output", str(tmp_path)]
    with pytest.raises(OverrideError, match="its LazyConfig name is 'train.init_checkpoint'"):
        predict_main(base + ["MODEL.WEIGHTS=x.pth"])
    with pytest.raises(OverrideError, match="option '--score-threshold' comes after"):
        predict_main(base + ["train.device=cpu", "--score-threshold", "0.3"])
    with pytest.raises(PredictError, match="looks like a config override"):
        list_images([str(img), "train.device=cpu"])
