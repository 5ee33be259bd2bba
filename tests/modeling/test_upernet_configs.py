"""configs/ADE20K: one file per release UperNet row; parameter counts, recipe, schedule."""
import glob
import os

import pytest
import torch
from detectron2.config import LazyConfig, instantiate

from conftest import REPO_ROOT
from vit_adapter.modeling.semantic_segmentor import SlidingWindowSegmentor
from vit_adapter.modeling.upernet import UperNetHead

ADE = os.path.join(REPO_ROOT, "configs", "ADE20K")
# Release row -> (params counted from the release's code at random init, aux head included;
# lr; weight decay; layer decay or None; pixel mean).
IMAGENET, AUGREG = [123.675, 116.28, 103.53], [127.5, 127.5, 127.5]
ROWS = {
    "upernet_vit_adapter_t_512_160k.py": (36.06e6, 12e-5, 0.01, 0.95, IMAGENET),
    "upernet_vit_adapter_s_512_160k.py": (57.61e6, 6e-5, 0.01, 0.95, IMAGENET),
    "upernet_vit_adapter_b_512_160k.py": (133.64e6, 6e-5, 0.01, 0.95, IMAGENET),
    "upernet_augreg_adapter_t_512_160k.py": (36.06e6, 12e-5, 0.01, 0.95, IMAGENET),
    # AugReg-B: the B count + the 384 px pos-embed grid, (24^2 - 14^2) * 768
    "upernet_augreg_adapter_b_512_160k.py": (133.64e6 + 380 * 768, 2e-5, 0.01, None, AUGREG),
    "upernet_augreg_adapter_l_512_160k.py": (363.8e6, 2e-5, 0.05, 0.95, AUGREG),
    "upernet_beit_adapter_l_640_160k.py": (451.9e6, 2e-5, 0.05, 0.90, IMAGENET),
}


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """One intra-op thread: tiny tensors on a shared CPU (threads only spin)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)



def _load(name):
    return LazyConfig.load(os.path.join(ADE, name))


def test_inventory():
    """Every UperNet config in configs/ADE20K/ is a row here (the Mask2Former rows have their own table)."""
    found = {os.path.basename(p) for p in glob.glob(os.path.join(ADE, "upernet_*.py"))}
    assert set(ROWS) == found


@pytest.mark.parametrize("name", sorted(ROWS))
def test_row(name):
    params, lr, wd, layer_decay, mean = ROWS[name]
    cfg = _load(name)
    with torch.device("meta"):
        model = instantiate(cfg.model)
    n = sum(p.numel() for p in model.parameters())
    assert abs(n - params) / params < 0.01, f"{n / 1e6:.2f}M vs {params / 1e6:.2f}M"
    assert isinstance(model, SlidingWindowSegmentor) and isinstance(model.sem_seg_head, UperNetHead)
    crop, stride = ((640, 640), (426, 426)) if "_640_" in name else ((512, 512), (341, 341))
    assert (model.test_mode, model.crop_size, model.stride) == ("slide", crop, stride)
    train_crop = cfg.dataloader.train.mapper.augmentations[1].crop_size
    assert tuple(train_crop) == crop and cfg.dataloader.test.mapper.augmentations[0].short_edge_length == crop[0]
    head = model.sem_seg_head
    assert head.num_classes == 150 and head.ignore_value == 255 and head.aux_loss_weight == 0.4
    assert head.aux_in_feature == "res4" and head.in_features == ["res2", "res3", "res4", "res5"]
    assert list(cfg.model.pixel_mean) == mean
    assert cfg.train.max_iter == 160000 and cfg.dataloader.train.total_batch_size == 16
    assert (cfg.optimizer.lr, cfg.optimizer.weight_decay) == (lr, wd)
    cfg.optimizer.params.model = model
    groups = instantiate(cfg.optimizer.params)
    scales = sorted({g["lr_scale"] for g in groups})
    depth = len(model.backbone.blocks)
    if layer_decay:
        assert cfg.optimizer.params.num_layers == depth
        assert scales == pytest.approx(sorted(layer_decay**k for k in range(depth + 2)))
    else:  # AugReg-B: heads x10 (not their biases)
        assert scales == [1.0, 10.0]
        ten = {n for g in groups if g["lr_scale"] == 10.0 for n in g["param_names"]}
        assert "sem_seg_head.decode_head.conv_seg.weight" in ten
        assert "sem_seg_head.decode_head.conv_seg.bias" not in ten
        assert not any(n.startswith("backbone.") for n in ten)


def test_global_attention_in_every_block():
    for name in ROWS:
        cfg = _load(name)
        if "beit" in name:
            assert cfg.model.backbone.window_attn is False and cfg.model.backbone.with_cls_token, name
        else:
            assert list(cfg.model.backbone.window_block_indexes) == [], name


def test_poly_schedule_with_warmup():
    sched = instantiate(_load("upernet_vit_adapter_s_512_160k.py").lr_multiplier)
    at = lambda it: sched(it / 160000)  # noqa: E731
    assert at(0) == pytest.approx(1e-6)
    assert at(1500) == pytest.approx(1 - 1500 / 160000)
    assert at(80000) == pytest.approx(0.5)
    assert at(159999) == pytest.approx(1 / 160000, abs=1e-9)
    assert at(750) < at(1500)


def test_train_pipeline_crops_512():
    import numpy as np
    from detectron2.data import transforms as T

    cfg = _load("upernet_vit_adapter_s_512_160k.py")
    augs = T.AugmentationList([instantiate(a) for a in cfg.dataloader.train.mapper.augmentations])
    np.random.seed(0)
    for _ in range(5):
        aug = T.AugInput(np.zeros((512, 683, 3), np.uint8), sem_seg=np.random.randint(0, 150, (512, 683)).astype(np.uint8))
        augs(aug)
        assert aug.image.shape[0] <= 512 and aug.image.shape[1] <= 512
        assert aug.sem_seg.shape == aug.image.shape[:2]
