"""A checkpoint whose weights hold NaN / inf is refused at load time, naming the tensors
(issue 16 item 7): training init, --resume and inference alike."""
import pickle

import numpy as np
import pytest
import torch
from checkpoint_fixtures import build_tiny, one_thread  # noqa: F401 (fixture)

from vit_adapter.checkpoint.checkpointer import (
    NonFiniteCheckpointError,
    ViTAdapterCheckpointer,
    load_for_inference,
    non_finite_tensors,
)

pytestmark = pytest.mark.usefixtures("one_thread")
KEY = "backbone.bottom_up.blocks.0.attn.qkv.weight"


@pytest.fixture(scope="module")
def model():
    return build_tiny()


def _poisoned(model):
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    sd[KEY].view(-1)[:3] = float("nan")
    sd["roi_heads.box_predictor.cls_score.bias"][0] = float("inf")
    return sd


def test_clean_state_dict_has_no_non_finite(model):
    assert non_finite_tensors(model.state_dict(), model.state_dict()) == []


@pytest.mark.parametrize("how", ["init", "inference"])
def test_nan_checkpoint_is_refused_naming_the_tensors(model, tmp_path, how):
    path = str(tmp_path / "nan.pth")
    torch.save({"model": _poisoned(model)}, path)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(NonFiniteCheckpointError) as e:
        if how == "init":
            ViTAdapterCheckpointer(model).resume_or_load(path, resume=False)
        else:
            load_for_inference(model, path)
    msg = str(e.value)
    assert "\n" not in msg and "non-finite weights in 2 tensor(s)" in msg
    assert f"{KEY} (3 NaN of " in msg and "roi_heads.box_predictor.cls_score.bias (1 inf of " in msg
    # nothing was loaded
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_nan_in_a_detectron2_pkl_is_refused(model, tmp_path):
    # .pkl files go through detectron2's renaming heuristics: every tensor is checked
    path = str(tmp_path / "nan.pkl")
    sd = {k: v.numpy() for k, v in _poisoned(model).items()}
    with open(path, "wb") as f:
        pickle.dump({"model": sd, "__author__": "test", "matching_heuristics": True}, f)
    with pytest.raises(NonFiniteCheckpointError, match=KEY.replace(".", r"\.")):
        ViTAdapterCheckpointer(model).load(path)


def test_model_buffers_that_are_non_finite_themselves_are_not_reported():
    model_sd = {"mask": torch.tensor([0.0, -np.inf]), "w": torch.zeros(2)}
    assert non_finite_tensors({"mask": torch.tensor([0.0, -np.inf]), "w": torch.zeros(2)}, model_sd) == []
    assert non_finite_tensors({"w": torch.tensor([np.inf, np.nan])}, model_sd) == ["w (1 NaN and 1 inf of 2)"]
