"""SlidingWindowSegmentor: training as detectron2's SemanticSegmentor, slide / whole / ms+flip inference."""
import os

import numpy as np
import pytest
import torch
from detectron2.config import LazyConfig, instantiate
from detectron2.modeling import Backbone, SemanticSegmentor
from detectron2.layers import ShapeSpec
from detectron2.utils.events import EventStorage
from torch import nn

from conftest import REPO_ROOT
from vit_adapter.modeling.semantic_segmentor import SlidingWindowSegmentor, slide_windows

UPERNET_CFG = os.path.join(REPO_ROOT, "configs", "common", "models", "upernet_vit_adapter.py")
TINY_BACKBONE = dict(
    embed_dim=32, depth=4, num_heads=2, deform_num_heads=2, drop_path_rate=0.0, pretrain_size=64,
    interaction_indexes=[[0, 0], [1, 1], [2, 2], [3, 3]], conv_inplane=8, norm="BN",
)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """One intra-op thread: tiny tensors on a shared CPU (threads only spin)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)



def tiny_upernet(**model_kw):
    cfg = LazyConfig.load(UPERNET_CFG)
    cfg.model.backbone.update(TINY_BACKBONE)
    cfg.model.sem_seg_head.update(num_classes=4, channels=16, aux_channels=8, norm="BN")
    cfg.model.update({"crop_size": 64, "stride": 32, **model_kw})
    return instantiate(cfg.model)


class _PixelBackbone(Backbone):
    """Stride-1 'backbone': the image itself as 'res2'."""

    @property
    def size_divisibility(self):
        return 1

    def output_shape(self):
        return {"res2": ShapeSpec(channels=3, stride=1)}

    def forward(self, x):
        return {"res2": x}


class _WindowHead(nn.Module):
    """Scores that depend on the whole window: class c = (c + 1) * pixel channel 0 + window mean."""

    ignore_value = 255

    def forward(self, features, targets=None):
        x = features["res2"]
        base = x[:, :1] + x.mean(dim=(1, 2, 3), keepdim=True)
        return torch.cat([base * (c + 1) for c in range(2)], dim=1), {}


def _stub(**kw):
    return SlidingWindowSegmentor(
        backbone=_PixelBackbone(), sem_seg_head=_WindowHead(), pixel_mean=[0.0] * 3, pixel_std=[1.0] * 3, **kw
    ).eval()


def test_slide_windows_are_mmsegs():
    # ADE20K: 512 x 683 image, crop 512, stride 341 -> one row, two columns (the last shifted back)
    assert slide_windows(512, 683, (512, 512), (341, 341)) == [(0, 512, 0, 512), (0, 512, 171, 683)]
    assert slide_windows(544, 512, (512, 512), (341, 341)) == [(0, 512, 0, 512), (32, 544, 0, 512)]
    assert slide_windows(100, 80, (512, 512), (341, 341)) == [(0, 100, 0, 80)]  # smaller than a crop
    h, w = 700, 1100
    cover = np.zeros((h, w), int)
    for y1, y2, x1, x2 in slide_windows(h, w, (512, 512), (341, 341)):
        assert y2 - y1 == 512 and x2 - x1 == 512
        cover[y1:y2, x1:x2] += 1
    assert cover.min() >= 1


def test_slide_equals_hand_computed_average():
    """5 x 7 image, crop 3 x 4, stride 2 x 3: rows [0, 3), [2, 5); columns [0, 4), [3, 7)."""
    torch.manual_seed(0)
    image = torch.rand(3, 5, 7) * 255
    model = _stub(test_mode="slide", crop_size=(3, 4), stride=(2, 3))
    with torch.no_grad():
        got = model([{"image": image}])[0]["sem_seg"]
    x = image.numpy().astype(np.float64)
    total, count = np.zeros((2, 5, 7)), np.zeros((5, 7))
    for y1, y2 in ((0, 3), (2, 5)):
        for x1, x2 in ((0, 4), (3, 7)):
            win = x[:, y1:y2, x1:x2]
            for c in range(2):
                total[c, y1:y2, x1:x2] += (c + 1) * (win[0] + win.mean())
            count[y1:y2, x1:x2] += 1
    np.testing.assert_allclose(got.numpy(), total / count, rtol=1e-5)


def test_slide_equals_whole_when_one_window_covers_the_image():
    model = tiny_upernet(test_mode="slide", crop_size=128, stride=64).eval()
    inputs = [{"image": torch.rand(3, 96, 128) * 255}]
    with torch.no_grad():
        slide = model(inputs)[0]["sem_seg"]
        model.test_mode = "whole"
        whole = model(inputs)[0]["sem_seg"]
    assert slide.shape == (4, 96, 128)
    torch.testing.assert_close(slide, whole, rtol=0, atol=0)


def test_slide_is_the_window_average_of_the_network():
    model = tiny_upernet(test_mode="slide", crop_size=64, stride=32).eval()
    image = torch.rand(3, 64, 128) * 255
    with torch.no_grad():
        got = model([{"image": image}])[0]["sem_seg"]
        x = ((image - model.pixel_mean) / model.pixel_std)[None]
        total, count = torch.zeros(1, 4, 64, 128), torch.zeros(1, 1, 64, 128)
        for x1 in (0, 32, 64):  # columns of 64 every 32 px over 128: 3 windows, one row
            total[..., x1 : x1 + 64] += model.network_scores(x[..., x1 : x1 + 64])
            count[..., x1 : x1 + 64] += 1
    torch.testing.assert_close(got, (total / count)[0])


def test_output_is_resized_to_height_and_width():
    model = tiny_upernet(test_mode="whole").eval()
    with torch.no_grad():
        out = model([{"image": torch.rand(3, 90, 120) * 255, "height": 45, "width": 60}])
    assert out[0]["sem_seg"].shape == (4, 45, 60)


def test_flip_test_averages_probabilities():
    image = torch.rand(3, 5, 7) * 255
    with torch.no_grad():
        plain = _stub(test_mode="whole")([{"image": image}])[0]["sem_seg"]
        flip = _stub(test_mode="whole", test_flip=True)([{"image": image}])[0]["sem_seg"]
        mirrored = _stub(test_mode="whole")([{"image": image.flip(-1)}])[0]["sem_seg"].flip(-1)
    expected = (plain.softmax(0) + mirrored.softmax(0)) / 2
    torch.testing.assert_close(flip, expected)
    assert torch.allclose(flip.sum(0), torch.ones(5, 7))


def test_multi_scale_shapes_and_padding():
    model = tiny_upernet(test_mode="slide", test_scales=(0.5, 1.0, 1.5), test_flip=True).eval()
    with torch.no_grad():
        out = model([{"image": torch.rand(3, 70, 100) * 255}, {"image": torch.rand(3, 64, 64) * 255}])
    assert out[0]["sem_seg"].shape == (4, 70, 100) and out[1]["sem_seg"].shape == (4, 64, 64)
    for o in out:
        torch.testing.assert_close(o["sem_seg"].sum(0), torch.ones(o["sem_seg"].shape[1:]))


def test_training_forward_is_detectron2s():
    model = tiny_upernet().train()
    reference = SemanticSegmentor(
        backbone=model.backbone, sem_seg_head=model.sem_seg_head, pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    ).train()
    inputs = [{"image": torch.rand(3, 64, 96) * 255, "sem_seg": torch.randint(0, 4, (64, 96))} for _ in range(2)]
    with EventStorage(0):
        torch.manual_seed(1)
        ours = model(inputs)
        torch.manual_seed(1)
        theirs = reference(inputs)
    assert set(ours) == {"loss_sem_seg", "loss_sem_seg_aux"}
    for k in ours:
        torch.testing.assert_close(ours[k], theirs[k])


def test_bad_arguments():
    with pytest.raises(ValueError, match="test_mode"):
        _stub(test_mode="sliding")
    with pytest.raises(ValueError, match="multiple of the backbone"):
        tiny_upernet(test_mode="slide", crop_size=100)
    with pytest.raises(ValueError, match="crop_size"):
        _stub(test_mode="slide", crop_size=(0, 3))
    with pytest.raises(ValueError, match="test_scales"):
        _stub(test_scales=())
