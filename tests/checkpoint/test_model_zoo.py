"""Model zoo: registry, name / URL resolution, sha256 verification, MODEL_ZOO.md in sync."""
import json
import os

import pytest
import torch
from detectron2.utils.file_io import PathManager

from vit_adapter.checkpoint import model_zoo
from vit_adapter.checkpoint.checkpointer import ViTAdapterCheckpointer
from vit_adapter.checkpoint.model_zoo import ChecksumError, ModelZooEntry
from conftest import REPO_ROOT




@pytest.fixture
def local_entry(tmp_path):
    """A published checkpoint registered under a unique name (removed afterwards)."""
    path = str(tmp_path / "mine.pth")
    torch.save({"model": {"weight": torch.full((2, 2), 3.0), "bias": torch.ones(2)}}, path)
    entry = ModelZooEntry("test_local_linear", "configs/demo/x.py", path, model_zoo.sha256sum(path), 1.0, None)
    model_zoo.register(entry, overwrite=True)
    yield entry
    model_zoo._REGISTRY.pop(entry.name, None)


def test_official_entries():
    names = model_zoo.list_models()
    for size in "tsbl":
        assert f"mask_rcnn_vit_adapter_{size}_3x_ms" in names
    assert {"cascade_mask_rcnn_vit_adapter_s_3x_ms", "cascade_mask_rcnn_vit_adapter_b_3x_ms"} <= set(names)
    e = model_zoo.get("vit_adapter://mask_rcnn_vit_adapter_s_3x_ms")
    assert e.url.startswith("https://github.com/czczup/ViT-Adapter/releases/download/")
    assert (e.box_ap, e.mask_ap, e.source, e.sha256) == (48.2, 42.8, "official", None)
    assert model_zoo.resolve("vit_adapter://mask_rcnn_vit_adapter_s_3x_ms") == (e.url, None)
    assert model_zoo.resolve(e.url) == (e.url, None)
    with pytest.raises(KeyError, match="mask_rcnn_vit_adapter_t_3x_ms"):  # lists the known names
        model_zoo.get("vit_adapter://no_such_model")


def test_load_by_name_verifies_sha256(local_entry, tmp_path):
    for ref in ("vit_adapter://test_local_linear", "test_local_linear", local_entry.url):
        model = torch.nn.Linear(2, 2)
        ViTAdapterCheckpointer(model).load(ref)
        assert torch.equal(model.weight, torch.full((2, 2), 3.0)), ref
    assert PathManager.get_local_path("vit_adapter://test_local_linear") == local_entry.url
    torch.save({"model": {"weight": torch.zeros(2, 2), "bias": torch.zeros(2)}}, local_entry.url)  # replaced
    model = torch.nn.Linear(2, 2)
    before = model.weight.detach().clone()
    with pytest.raises(ChecksumError, match="sha256 of .*mine.pth is [0-9a-f]{64}, the model zoo expects"):
        ViTAdapterCheckpointer(model).load("vit_adapter://test_local_linear")
    assert torch.equal(model.weight, before)


def test_registry_from_json_file(tmp_path, monkeypatch):
    path = str(tmp_path / "w.pth")
    torch.save({"model": {"weight": torch.ones(2, 2), "bias": torch.ones(2)}}, path)
    rows = [{"name": "test_json_entry", "config": "configs/demo/x.py", "url": path, "sha256": model_zoo.sha256sum(path)}]
    zoo = tmp_path / "zoo.json"
    zoo.write_text(json.dumps(rows))
    monkeypatch.setenv(model_zoo.MODEL_ZOO_ENV, str(zoo))
    try:
        assert model_zoo.resolve("vit_adapter://test_json_entry") == (path, rows[0]["sha256"])
    finally:
        model_zoo._REGISTRY.pop("test_json_entry", None)
        model_zoo._LOADED_ENV_FILE = None
    with pytest.raises(ValueError, match="sha256 must be 64 lowercase hex digits"):
        model_zoo.register(ModelZooEntry("bad", "c.py", "u", sha256="abc"))


def test_model_zoo_md_lists_every_entry():
    text = open(os.path.join(REPO_ROOT, "MODEL_ZOO.md")).read()
    for name in model_zoo.list_models():
        entry = model_zoo.get(name)
        if entry.source == "official":
            assert entry.table_row() in text, name


def test_publish_prints_a_row_that_round_trips(tmp_path, capsys):
    from vit_adapter.tools.publish_checkpoint import main

    src = str(tmp_path / "model_final.pth")
    torch.save({"model": {"w": torch.ones(3)}, "optimizer": {"state": {}, "param_groups": []}, "iteration": 9}, src)
    main([src, str(tmp_path / "pub" / "demo.pth"), "--config", "configs/demo/mask_rcnn_vit_adapter_demo.py",
          "--box-ap", "31.25"])
    out = capsys.readouterr().out
    sha = model_zoo.sha256sum(str(tmp_path / "pub" / "demo.pth"))
    assert sha in out and model_zoo.sha256sum(str(tmp_path / "pub" / "demo.safetensors")) in out
    row = [line for line in out.splitlines() if line.startswith("| demo |")]
    assert row and "31.2" in row[0] and sha[:12] in row[0]
    entry = json.loads(out[out.index("{"):])
    assert entry["sha256"] == sha and entry["name"] == "demo"
    assert set(torch.load(str(tmp_path / "pub" / "demo.pth"), weights_only=True)) == {"model"}


def _official_config_text(cascade, augreg):
    """The parts of the released mmdetection config that fix the conventions (stds, normalisation)."""
    stds = [(1.0, 1.0, 1.0, 1.0)] + (
        [(0.1, 0.1, 0.2, 0.2), (0.05, 0.05, 0.1, 0.1), (0.033, 0.033, 0.067, 0.067)] if cascade else [(0.1, 0.1, 0.2, 0.2)]
    )
    text = "".join(f"bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[0.0, 0.0, 0.0, 0.0], "
                   f"target_stds={list(s)})\n" for s in stds)
    mean, std = ([127.5] * 3, [127.5] * 3) if augreg else ([123.675, 116.28, 103.53], [58.395, 57.12, 57.375])
    return text + f"img_norm_cfg = dict(mean={mean}, std={std}, to_rgb=True)\n"


@pytest.mark.parametrize("name", [n for n in model_zoo.list_models() if model_zoo.get(n).source == "official"])
def test_official_entry_matches_its_config(name):
    """The entry's config exists, and an official checkpoint of that size / detector (names and
    shapes from the official module definitions) fills its model with the release's conventions."""
    from checkpoint_fixtures import official_detector_shapes
    from detectron2.config import LazyConfig, instantiate

    from vit_adapter.checkpoint.official import check_conventions, convert_official_state_dict

    cfg = LazyConfig.load(model_zoo.get_config_file(name))
    with torch.device("meta"):
        model = instantiate(cfg.model)
    bb = cfg.model.backbone.bottom_up
    cascade = name.startswith("cascade")
    shapes = official_detector_shapes(
        dict(embed_dim=bb.embed_dim, depth=bb.depth, pretrain_size=bb.pretrain_size, conv_inplane=64,
             deform_num_heads=bb.deform_num_heads, deform_ratio=bb.deform_ratio),
        80, cascade=cascade,
    )
    official = {k: torch.empty(v, device="meta") for k, v in shapes.items()}
    out, report = convert_official_state_dict({"state_dict": official}, target_state_dict=model.state_dict())
    assert report["missing"] == []
    check_conventions(report, {"config": _official_config_text(cascade, "_l_" in name)}, model)
    augreg = "_l_" in name
    assert list(cfg.model.pixel_mean) == ([127.5] * 3 if augreg else [123.675, 116.28, 103.53])
    assert cfg.model.input_format == "RGB"
