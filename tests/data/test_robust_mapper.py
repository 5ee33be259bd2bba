"""Bad inputs: each case of the policy table in docs/robustness.md."""
import logging
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from detectron2.config import LazyConfig, instantiate
from detectron2.structures import BoxMode
from detectron2.utils.events import EventStorage

from vit_adapter.data import DatasetError, load_checked_coco_json
from vit_adapter.data.image_io import read_image
from vit_adapter.data.robust_mapper import RobustDatasetMapper
from conftest import REPO_ROOT


TINY_CONFIG = os.path.join(REPO_ROOT, "tests", "configs", "tiny_mask_rcnn_vit_adapter.py")


def write_image(path, size=(48, 40), mode="RGB", fmt=None):
    """A (W, H) = size image of random pixels in `mode`."""
    w, h = size
    rng = np.random.default_rng(0)
    if mode == "I;16":
        img = Image.fromarray(rng.integers(0, 65535, (h, w)).astype(np.uint16))
    else:
        channels = {"L": 1, "RGB": 3, "RGBA": 4}[mode]
        arr = rng.integers(0, 255, (h, w, channels) if channels > 1 else (h, w)).astype(np.uint8)
        img = Image.fromarray(arr, mode)
    img.save(path, format=fmt)
    return str(path)


def record(path, size=(48, 40), annotations=None):
    w, h = size
    if annotations is None:
        annotations = [box_anno([4, 4, 20, 16])]
    return {"file_name": str(path), "width": w, "height": h, "image_id": 1, "annotations": annotations}


def box_anno(xywh, category_id=0, segmentation="box"):
    x, y, w, h = xywh
    if segmentation == "box":
        segmentation = [[x, y, x + w, y, x + w, y + h, x, y + h]]
    return {"bbox": list(xywh), "bbox_mode": BoxMode.XYWH_ABS, "category_id": category_id,
            "segmentation": segmentation, "iscrowd": 0}


def mapper(is_train=True, **kw):
    return RobustDatasetMapper(is_train=is_train, augmentations=[], image_format="RGB",
                               use_instance_mask=True, num_classes=3, **kw)


# ------------------------------------------------------------------ corrupt / truncated images
@pytest.fixture
def broken_images(tmp_path):
    good = write_image(tmp_path / "good.jpg", fmt="JPEG")
    with open(good, "rb") as f:
        data = f.read()
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(data[: len(data) // 2])
    garbage = tmp_path / "garbage.jpg"
    garbage.write_bytes(b"this is not an image" * 10)
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    return [str(truncated), str(garbage), str(empty)]


def test_corrupt_images_are_skipped_and_counted_at_train_time(broken_images, caplog):
    m = mapper()
    with caplog.at_level(logging.WARNING):
        results = [m(record(p)) for p in broken_images]
    assert results == [None, None, None]
    assert m.skipped["undecodable"] == 3
    msgs = [r.getMessage() for r in caplog.records if "skipped image" in r.getMessage()]
    assert len(msgs) == 3 and "truncated.jpg" in msgs[0]
    assert "skipped so far in this process: 3 images" in msgs[-1]


def test_corrupt_image_stops_evaluation_with_its_name(broken_images):
    with pytest.raises(DatasetError, match="truncated.jpg cannot be used \\(undecodable"):
        mapper(is_train=False)(record(broken_images[0]))


def test_corrupt_image_in_a_small_dataset_stops_at_load_time(tmp_path, broken_images):
    import json

    ann = {"images": [{"id": 1, "file_name": os.path.basename(broken_images[0]), "width": 48, "height": 40}],
           "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [4, 4, 20, 16], "area": 320,
                            "iscrowd": 0, "segmentation": [[4, 4, 24, 4, 24, 20, 4, 20]]}],
           "categories": [{"id": 1, "name": "a"}]}
    json_file = tmp_path / "ann.json"
    json_file.write_text(json.dumps(ann))
    with pytest.raises(DatasetError, match="truncated.jpg is corrupt"):
        load_checked_coco_json(str(json_file), str(tmp_path))


def test_size_mismatch_is_skipped(tmp_path):
    path = write_image(tmp_path / "a.png", size=(48, 40))
    m = mapper()
    assert m(record(path, size=(40, 48))) is None
    assert m.skipped["size mismatch"] == 1


# ------------------------------------------------------------------ image modes
@pytest.mark.parametrize("mode", ["L", "RGBA", "I;16"])
def test_grayscale_rgba_and_16bit_images_become_rgb(tmp_path, mode):
    path = write_image(tmp_path / "x.png", mode=mode)
    out = mapper()(record(path))
    image = out["image"]
    assert image.shape == (3, 40, 48) and image.dtype == torch.uint8
    src = np.asarray(Image.open(path))
    if mode == "L":
        assert torch.equal(image[0], image[1]) and torch.equal(image[0], torch.from_numpy(src.copy()))
    elif mode == "RGBA":  # alpha dropped, colours kept
        assert torch.equal(image.permute(1, 2, 0), torch.from_numpy(src[..., :3].copy()))
    else:  # 16-bit scaled to 8-bit, not clipped to white
        assert abs(image.float().mean().item() - src.astype(np.float64).mean() / 257) < 1.0
    assert len(out["instances"]) == 1


def test_palette_image(tmp_path):
    path = tmp_path / "p.png"
    Image.fromarray(np.arange(48 * 40, dtype=np.uint8).reshape(40, 48) % 7, "L").convert("P").save(path)
    assert read_image(str(path), "BGR").shape == (40, 48, 3)


# ------------------------------------------------------------------ annotations
def test_bad_boxes_and_polygons_are_dropped_and_counted(tmp_path, caplog):
    path = write_image(tmp_path / "a.png", size=(48, 40))
    annos = [
        box_anno([4, 4, 20, 16]),                              # kept
        box_anno([30, 20, 40, 40]),                            # partly outside: kept, clipped
        box_anno([100, 100, 10, 10]),                          # fully outside
        box_anno([10, 10, 0, 5]),                              # zero width
        box_anno([10, 10, 5, 0]),                              # zero height
        box_anno([float("nan"), 1, 5, 5]),                     # NaN
        box_anno([5, 5, 10, 10], segmentation=[]),             # empty polygon list
        box_anno([5, 5, 10, 10], segmentation=[[5, 5, 15, 5]]),  # polygon with 2 points
        box_anno([5, 5, 10, 10], segmentation=[[5, 5, 15, 5, 15, 15], [1, 2]]),  # one valid polygon: kept
    ]
    m = mapper()
    with caplog.at_level(logging.WARNING):
        out = m(record(path, annotations=annos))
    inst = out["instances"]
    assert len(inst) == 3
    boxes = inst.gt_boxes.tensor
    assert boxes[1].tolist() == [30.0, 20.0, 48.0, 40.0]  # clipped to the 48 x 40 image
    assert m.dropped == {"box outside the image": 1, "zero-area box": 2, "non-finite box": 1, "no valid polygon": 2}
    assert any("dropped 6 annotations" in r.getMessage() for r in caplog.records)


def test_category_outside_the_model_stops_with_a_clear_error(tmp_path):
    path = write_image(tmp_path / "a.png")
    with pytest.raises(DatasetError, match="category_id 5, outside \\[0, 3\\)"):
        mapper()(record(path, annotations=[box_anno([4, 4, 10, 10], category_id=5)]))


def test_category_missing_from_the_coco_file_stops_at_load_time(tmp_path):
    import json

    write_image(tmp_path / "a.jpg", fmt="JPEG")
    ann = {"images": [{"id": 1, "file_name": "a.jpg", "width": 48, "height": 40}],
           "annotations": [{"id": 1, "image_id": 1, "category_id": 9, "bbox": [4, 4, 20, 16], "area": 320,
                            "iscrowd": 0, "segmentation": [[4, 4, 24, 4, 24, 20, 4, 20]]}],
           "categories": [{"id": 1, "name": "a"}]}
    (tmp_path / "ann.json").write_text(json.dumps(ann))
    with pytest.raises(DatasetError, match="category_id=9"):
        load_checked_coco_json(str(tmp_path / "ann.json"), str(tmp_path), "va_test_bad_category")


# ------------------------------------------------------------------ the model on odd images
@pytest.fixture(scope="module")
def tiny_model():
    cfg = LazyConfig.load(TINY_CONFIG)
    torch.manual_seed(0)
    model = instantiate(cfg.model)
    return model


def test_tiny_odd_sized_and_unannotated_images_train_and_predict(tmp_path, tiny_model):
    m = mapper()
    batch = [
        m(record(write_image(tmp_path / "small.png", size=(27, 20)), size=(27, 20),
                 annotations=[box_anno([2, 2, 12, 10])])),        # < 32 px
        m(record(write_image(tmp_path / "odd.png", size=(70, 50)), size=(70, 50))),  # not a multiple of 16
        m(record(write_image(tmp_path / "none.png", size=(48, 40)), annotations=[])),  # no annotation
    ]
    assert [len(b["instances"]) for b in batch] == [1, 1, 0]
    tiny_model.train()
    with EventStorage(0):
        losses = tiny_model(batch)
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    tiny_model.eval()
    with torch.no_grad():
        preds = tiny_model([{"image": b["image"], "height": b["image"].shape[1], "width": b["image"].shape[2]}
                            for b in batch])
    assert [p["instances"].image_size for p in preds] == [(20, 27), (50, 70), (40, 48)]


# ------------------------------------------------------------------ train_net end to end
def run_train_net(tmp_path, *args, fault=""):
    root = tmp_path / "datasets"  # the config's demo split is generated there on first use
    env = dict(os.environ, DETECTRON2_DATASETS=str(root), VA_TEST_FAULT=fault, OMP_NUM_THREADS="1")
    cmd = [sys.executable, os.path.join(REPO_ROOT, "tests", "_fault_injection.py"), *args]
    return subprocess.run(cmd, env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)


def test_nan_loss_stops_with_a_hint(tmp_path):
    r = run_train_net(tmp_path, "--config-file", TINY_CONFIG, f"train.output_dir={tmp_path / 'out'}",
                      "train.max_iter=4", fault="nan_loss_at_iter:2")
    assert r.returncode == 1
    err = r.stderr[r.stderr.rindex("train_net.py: error:"):]  # the final message, after the log
    assert "Loss became infinite or NaN at iteration=2" in err
    assert "Hint:" in err and "lower learning rate" in err and "gradient clipping" in err
    # The last complete checkpoint is not overwritten with NaN weights.
    assert not os.path.exists(tmp_path / "out" / "model_final.pth")


def test_checkpoint_of_another_model_size_is_refused_by_train_net(tmp_path, tiny_model):
    ckpt = tmp_path / "embed48.pth"
    torch.save({"model": tiny_model.state_dict()}, ckpt)
    r = run_train_net(tmp_path, "--config-file", TINY_CONFIG, "--eval-only", f"train.init_checkpoint={ckpt}",
                      f"train.output_dir={tmp_path / 'out'}", "model.backbone.bottom_up.embed_dim=96")
    assert r.returncode == 1, r.stderr[-2000:]
    err = r.stderr[r.stderr.rindex("train_net.py: error:"):]
    assert "embed 48" in err and "embed 96" in err, err
    assert "Traceback" not in err
