"""Semantic-segmentation data: checked registration of image + label-PNG folders, the mapper,
the demo segmentation dataset, the release's augmentations."""
import os

import numpy as np
import pytest
import torch
from PIL import Image

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data import transforms as T

from vit_adapter.data import DatasetError
from vit_adapter.data.demo_seg_dataset import (
    IGNORE_VALUE,
    SEG_CLASSES,
    generate_demo_seg_dataset,
    prepare_demo_seg_dataset,
    register_demo_seg_dataset,
)
from vit_adapter.data.sem_seg import (
    SemSegDatasetMapper,
    load_checked_sem_seg,
    read_label_map,
    register_checked_sem_seg,
)
from vit_adapter.data.sem_seg_transforms import PhotoMetricDistortion, RatioRangeResize


def _write(root, n=3, size=(40, 48), num_classes=3):
    img_dir, lab_dir = os.path.join(root, "img"), os.path.join(root, "lab")
    os.makedirs(img_dir, exist_ok=True)
    os.makedirs(lab_dir, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, size + (3,), dtype=np.uint8)).save(os.path.join(img_dir, f"{i}.jpg"))
        label = rng.integers(0, num_classes, size).astype(np.uint8)
        label[:2] = 255
        Image.fromarray(label, mode="L").save(os.path.join(lab_dir, f"{i}.png"))
    return img_dir, lab_dir


def test_good_folders_load(tmp_path):
    img, lab = _write(str(tmp_path))
    dicts = load_checked_sem_seg(img, lab, num_classes=3)
    assert len(dicts) == 3
    assert dicts[0]["sem_seg_file_name"].endswith("0.png") and (dicts[0]["height"], dicts[0]["width"]) == (40, 48)


def test_registration_sets_metadata_for_the_evaluator(tmp_path):
    img, lab = _write(str(tmp_path))
    register_checked_sem_seg("_test_seg_ok", img, lab, stuff_classes=["a", "b", "c"])
    meta = MetadataCatalog.get("_test_seg_ok")
    assert (meta.evaluator_type, meta.ignore_label, meta.stuff_classes) == ("sem_seg", 255, ["a", "b", "c"])
    assert len(DatasetCatalog.get("_test_seg_ok")) == 3


@pytest.mark.parametrize(
    "break_it, message",
    [
        (lambda lab: Image.fromarray(np.zeros((40, 48, 3), np.uint8)).save(lab), "is a RGB image"),
        (lambda lab: Image.fromarray(np.zeros((30, 48), np.uint8), mode="L").save(lab), "48x30 .* but its image is 48x40"),
        (lambda lab: Image.fromarray(np.full((40, 48), 7, np.uint8), mode="L").save(lab), "values 7 outside"),
        (lambda lab: Image.fromarray(np.full((40, 48), 300, np.uint16)).save(lab), "values 300 outside"),
        (lambda lab: open(lab, "wb").write(b"not a png"), "corrupt or not an image"),
        (lambda lab: os.remove(lab), "have no label file"),
    ],
    ids=["rgb", "size", "out-of-range", "16-bit-out-of-range", "corrupt", "missing"],
)
def test_bad_labels_are_one_line_errors(tmp_path, break_it, message):
    img, lab = _write(str(tmp_path))
    break_it(os.path.join(lab, "1.png"))
    with pytest.raises(DatasetError, match=message) as e:
        load_checked_sem_seg(img, lab, num_classes=3)
    assert "\n" not in str(e.value)


def test_label_without_image_and_skip(tmp_path):
    img, lab = _write(str(tmp_path))
    os.remove(os.path.join(img, "2.jpg"))
    with pytest.raises(DatasetError, match="1 files have no image"):
        load_checked_sem_seg(img, lab, num_classes=3)
    assert len(load_checked_sem_seg(img, lab, num_classes=3, unmatched="skip")) == 2


def test_palette_labels_are_their_indices_and_16_bit_labels_are_read(tmp_path):
    label = np.array([[0, 1], [2, 255]], np.uint8)
    pal = Image.fromarray(label, mode="P")
    pal.putpalette([255, 255, 255] * 256)  # every index drawn white: the indices still count
    pal.save(tmp_path / "p.png")
    np.testing.assert_array_equal(read_label_map(str(tmp_path / "p.png"), 3), label)
    Image.fromarray(np.array([[0, 1], [2, 299]], np.uint16)).save(tmp_path / "i16.png")
    np.testing.assert_array_equal(read_label_map(str(tmp_path / "i16.png"), 300, ignore_value=65535), [[0, 1], [2, 299]])


def test_values_are_checked_when_reading_too(tmp_path):
    img, lab = _write(str(tmp_path))
    # check_values="none" (large datasets): the mapper still stops on a bad label
    Image.fromarray(np.full((40, 48), 9, np.uint8), mode="L").save(os.path.join(lab, "0.png"))
    dicts = load_checked_sem_seg(img, lab, num_classes=3, check_values="none")
    mapper = SemSegDatasetMapper(is_train=True, augmentations=[], num_classes=3)
    assert mapper(dicts[1])["sem_seg"].dtype == torch.int64
    with pytest.raises(DatasetError, match="values 9 outside"):
        mapper(dicts[0])


def test_mapper_output_and_crop(tmp_path):
    img, lab = _write(str(tmp_path))
    d = load_checked_sem_seg(img, lab, num_classes=3)[0]
    mapper = SemSegDatasetMapper(
        is_train=True, augmentations=[T.RandomCrop("absolute", (32, 32)), T.RandomFlip()], num_classes=3
    )
    out = mapper(d)
    assert out["image"].shape == (3, 32, 32) and out["sem_seg"].shape == (32, 32)
    assert "sem_seg_file_name" not in out and d["sem_seg_file_name"]  # the input dict is not changed
    assert set(out["sem_seg"].unique().tolist()) <= {0, 1, 2, 255}


def test_ratio_range_resize_is_mmsegs():
    np.random.seed(0)
    aug = RatioRangeResize(scale=(2048, 512), ratio_range=(1.0, 1.0))
    for h, w in ((512, 683), (683, 512), (300, 4000)):
        t = aug.get_transform(np.zeros((h, w, 3), np.uint8))
        factor = min(2048 / max(h, w), 512 / min(h, w))
        assert (t.new_h, t.new_w) == (int(h * factor + 0.5), int(w * factor + 0.5))


def test_photometric_distortion_keeps_shape_and_labels():
    np.random.seed(1)
    img = np.random.randint(0, 255, (20, 30, 3), dtype=np.uint8)
    changed = 0
    for _ in range(8):
        aug = T.AugInput(img.copy(), sem_seg=np.ones((20, 30), np.uint8))
        PhotoMetricDistortion()(aug)
        assert aug.image.shape == img.shape and aug.image.dtype == np.uint8
        assert (aug.sem_seg == 1).all()
        changed += int(not np.array_equal(aug.image, img))
    assert changed >= 4


def test_demo_seg_dataset(tmp_path):
    root = str(tmp_path / "demo")
    generate_demo_seg_dataset(root, num_train=3, num_val=2, image_size=64, seed=3)
    labels = [np.asarray(Image.open(os.path.join(root, "labels", "train", f"{i:06d}.png"))) for i in range(3)]
    values = set(np.unique(np.stack(labels)).tolist())
    assert 0 in values and IGNORE_VALUE in values and values & {1, 2, 3}
    assert values <= set(range(len(SEG_CLASSES))) | {IGNORE_VALUE}
    again = str(tmp_path / "again")
    generate_demo_seg_dataset(again, num_train=3, num_val=2, image_size=64, seed=3)
    for sub in ("images/train/000000.jpg", "labels/val/000001.png"):
        assert open(os.path.join(root, sub), "rb").read() == open(os.path.join(again, sub), "rb").read()


def test_demo_seg_registration_generates_on_first_use(tmp_path):
    root = str(tmp_path / "reg")
    names = register_demo_seg_dataset(root=root, names={"train": "_t_demo_seg_train", "val": "_t_demo_seg_val"},
                                      num_train=2, num_val=1, image_size=64)
    assert not os.path.exists(root)  # nothing written at registration
    assert len(DatasetCatalog.get(names["val"])) == 1 and os.path.isdir(root)
    assert MetadataCatalog.get(names["train"]).stuff_classes == SEG_CLASSES
    assert prepare_demo_seg_dataset(root, num_train=2, num_val=1, image_size=64) == root  # cached
