"""ViTAdapterCheckpointer: safe loading, ImageNet initialisation, size mismatch, atomic save, round trip."""
import math
import os
import pickle

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
from checkpoint_fixtures import build_tiny, one_thread  # noqa: F401 (fixture)
from detectron2.engine import SimpleTrainer
from detectron2.structures import BitMasks, Boxes, Instances

from vit_adapter.modeling.backbone import VIT_ADAPTER_PRESETS
from vit_adapter.checkpoint.checkpointer import (
    ALLOW_UNSAFE_PICKLE_ENV,
    CheckpointError,
    CheckpointMismatchError,
    CorruptCheckpointError,
    UnsafeCheckpointError,
    ViTAdapterCheckpointer,
    atomic_torch_save,
    load_checkpoint_file,
)
from conftest import REPO_ROOT

VIT = "backbone.bottom_up."
pytestmark = pytest.mark.usefixtures("one_thread")


def _vit_adapter_t(pretrain_size=224):
    return build_tiny(**{**VIT_ADAPTER_PRESETS["T"], "pretrain_size": pretrain_size, "window_size": 14,
                         "conv_inplane": 64, "drop_path_rate": 0.0})


def _is_vit_key(k):
    return k.startswith((VIT + "patch_embed.", VIT + "pos_embed", VIT + "blocks."))


# ----------------------------------------------------------------------------- safe loading


class _Payload:
    """Unpickling this object creates `path` (what an attacker's __reduce__ would do)."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.mark.parametrize("suffix", [".pth", ".pkl"])
def test_malicious_pickle_is_refused_without_running_it(tmp_path, suffix):
    marker = tmp_path / "pwned"
    path = str(tmp_path / f"evil{suffix}")
    data = {"model": {"w": torch.zeros(2) if suffix == ".pth" else np.zeros(2)}, "x": _Payload(str(marker))}
    if suffix == ".pth":
        torch.save(data, path)
    else:
        with open(path, "wb") as f:
            pickle.dump(data, f)
    model = torch.nn.Linear(2, 2)
    with pytest.raises(UnsafeCheckpointError) as e:
        ViTAdapterCheckpointer(model, allow_unsafe_pickle=False).load(path)
    msg = str(e.value)
    assert path in msg and "allow_unsafe_pickle=True" in msg and ALLOW_UNSAFE_PICKLE_ENV in msg
    assert "open" in msg  # names the offending global
    assert not marker.exists()


def test_unsafe_opt_in_for_trusted_files(tmp_path, monkeypatch):
    marker = tmp_path / "ran"
    path = str(tmp_path / "trusted.pth")
    torch.save({"model": {"weight": torch.ones(2, 2), "bias": torch.ones(2)}, "x": _Payload(str(marker))}, path)
    monkeypatch.setenv(ALLOW_UNSAFE_PICKLE_ENV, "1")
    model = torch.nn.Linear(2, 2)
    ViTAdapterCheckpointer(model).load(path)
    assert marker.exists() and torch.equal(model.weight, torch.ones(2, 2))


def test_safe_formats_load(tmp_path):
    from safetensors.torch import save_file

    sd = {"weight": torch.randn(2, 2), "bias": torch.randn(2)}
    save_file(sd, str(tmp_path / "w.safetensors"))
    torch.save({"model": {k: v.numpy() for k, v in sd.items()}, "iteration": np.int64(3)}, str(tmp_path / "w.pth"))
    with open(tmp_path / "w.pkl", "wb") as f:  # detectron2 model-zoo .pkl: numpy arrays
        pickle.dump({"model": {k: v.numpy() for k, v in sd.items()}, "__author__": "me"}, f)
    for name in ("w.safetensors", "w.pth", "w.pkl"):
        model = torch.nn.Linear(2, 2)
        ViTAdapterCheckpointer(model).load(str(tmp_path / name))
        assert torch.equal(model.weight, sd["weight"]) and torch.equal(model.bias, sd["bias"]), name
    with pytest.raises(FileNotFoundError, match="no_such.pth"):
        load_checkpoint_file(str(tmp_path / "no_such.pth"))
    with pytest.raises(CheckpointError, match="checkpoint not found: .*no_such.pth"):  # train_net: one line
        ViTAdapterCheckpointer(torch.nn.Linear(2, 2)).load(str(tmp_path / "no_such.pth"))


def _damaged_files(tmp_path):
    """name -> path of files that are not readable checkpoints."""
    from safetensors.torch import save_file

    sd = {"weight": torch.randn(4, 4), "bias": torch.randn(4)}
    files = {}
    (tmp_path / "notes.pth").write_text("these are my training notes, not weights\n")
    files["text renamed .pth"] = tmp_path / "notes.pth"
    (tmp_path / "noise.pth").write_bytes(np.random.default_rng(0).bytes(4096))
    files["random bytes .pth"] = tmp_path / "noise.pth"
    torch.save({"model": sd}, str(tmp_path / "full.pth"))
    data = (tmp_path / "full.pth").read_bytes()
    (tmp_path / "truncated.pth").write_bytes(data[: len(data) // 2])
    files["truncated .pth (zip)"] = tmp_path / "truncated.pth"
    torch.save({"model": sd}, str(tmp_path / "legacy.pth"), _use_new_zipfile_serialization=False)
    data = (tmp_path / "legacy.pth").read_bytes()
    (tmp_path / "legacy_truncated.pth").write_bytes(data[:40])
    files["truncated legacy .pth"] = tmp_path / "legacy_truncated.pth"
    save_file(sd, str(tmp_path / "w.safetensors"))
    data = (tmp_path / "w.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) - 20])
    files["truncated .safetensors"] = tmp_path / "cut.safetensors"
    with open(tmp_path / "w.pkl", "wb") as f:
        pickle.dump({"model": {k: v.numpy() for k, v in sd.items()}}, f)
    (tmp_path / "cut.pkl").write_bytes((tmp_path / "w.pkl").read_bytes()[:60])
    files["truncated .pkl"] = tmp_path / "cut.pkl"
    (tmp_path / "bad.npz").write_bytes(b"PK\x03\x04 not really a zip")
    files["damaged .npz"] = tmp_path / "bad.npz"
    return files


def test_damaged_files_are_reported_as_not_a_checkpoint(tmp_path):
    # Not "needs arbitrary pickled objects": the file is broken, and the message says so.
    for name, path in _damaged_files(tmp_path).items():
        with pytest.raises(CorruptCheckpointError) as e:
            load_checkpoint_file(str(path))
        msg = str(e.value)
        assert str(path) in msg and "not a readable checkpoint" in msg and "\n" not in msg, name
        with pytest.raises(CorruptCheckpointError):  # also without the safety net: still no deep error
            load_checkpoint_file(str(path), allow_unsafe_pickle=True) if path.suffix in (".pth", ".pkl") else \
                load_checkpoint_file(str(path))
        with pytest.raises(CheckpointError, match="not a readable checkpoint"):
            ViTAdapterCheckpointer(torch.nn.Linear(4, 4)).load(str(path))


# ----------------------------------------------------------------------------- ImageNet init


def test_deit_checkpoint_initialises_vit_adapter_t(tmp_path):
    deit = timm.create_model("deit_tiny_patch16_224", pretrained=False)
    with torch.no_grad():
        deit.pos_embed.normal_()
        deit.cls_token.normal_()
    path = str(tmp_path / "deit_tiny_patch16_224.pth")
    torch.save({"model": deit.state_dict()}, path)

    model = _vit_adapter_t(224)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ck = ViTAdapterCheckpointer(model)
    ck.load(path)
    after, ref, rep = model.state_dict(), deit.state_dict(), ck.last_report

    assert rep["format"] == "imagenet_vit"
    assert sorted(rep["dropped"]) == ["cls_token", "head.bias", "head.weight", "norm.bias", "norm.weight"]
    assert rep["unexpected"] == [] and rep["skipped_shapes"] == []
    # every DeiT ViT tensor landed, unchanged
    for k, v in ref.items():
        if k in rep["dropped"]:
            continue
        assert torch.equal(after[VIT + k], v), k
    # only the layer scales (not in DeiT) are missing from the ViT; they stay 1
    vit_missing = [k for k in rep["missing"] if _is_vit_key(k)]
    assert sorted(vit_missing) == sorted(f"{VIT}blocks.{i}.gamma{j}" for i in range(12) for j in (1, 2))
    assert all(torch.equal(after[k], torch.ones(192)) for k in vit_missing)
    # everything else (adapter, FPN, heads) keeps its initialisation
    for k in after:
        if not _is_vit_key(k):
            assert torch.equal(after[k], before[k]), k
    assert any(k.startswith(VIT + "interactions.") for k in rep["missing"])


def test_pos_embed_resized_to_the_config_grid(tmp_path):
    deit = timm.create_model("deit_tiny_patch16_224", pretrained=False, img_size=160)  # 10x10 grid
    with torch.no_grad():
        deit.pos_embed.normal_()
    path = str(tmp_path / "deit_160.pth")
    torch.save({"model": deit.state_dict()}, path)
    model = _vit_adapter_t(224)  # 14x14 pre-training grid
    ck = ViTAdapterCheckpointer(model)
    ck.load(path)
    assert ck.last_report["pos_embed_resized"] == ((10, 10), (14, 14))
    pos = model.backbone.bottom_up.pos_embed
    assert pos.shape == (1, 197, 192)
    # the official resize: bicubic, align_corners False, cls slot kept as is
    grid = deit.pos_embed[:, 1:].reshape(1, 10, 10, 192).permute(0, 3, 1, 2)
    want = F.interpolate(grid, size=(14, 14), mode="bicubic", align_corners=False).flatten(2).transpose(1, 2)
    torch.testing.assert_close(pos[:, 1:], want, rtol=0, atol=1e-5)
    assert torch.equal(pos[:, :1], deit.pos_embed[:, :1])


def _write_augreg_npz(vit, path):
    """timm ViT -> big_vision / AugReg .npz key names and layouts (inverse of timm's _load_weights)."""
    sd = {k: v.detach().numpy() for k, v in vit.state_dict().items()}
    d = vit.embed_dim
    h = vit.blocks[0].attn.num_heads
    w = {
        "embedding/kernel": sd["patch_embed.proj.weight"].transpose(2, 3, 1, 0),
        "embedding/bias": sd["patch_embed.proj.bias"],
        "Transformer/posembed_input/pos_embedding": sd["pos_embed"],
    }
    optional = {"cls": "cls_token", "Transformer/encoder_norm/scale": "norm.weight",
                "Transformer/encoder_norm/bias": "norm.bias", "head/kernel": "head.weight", "head/bias": "head.bias"}
    for npz_key, key in optional.items():
        if key in sd:
            w[npz_key] = sd[key].T if npz_key == "head/kernel" else sd[key]
    for i in range(len(vit.blocks)):
        p, b = f"Transformer/encoderblock_{i}/", f"blocks.{i}."
        mha = p + "MultiHeadDotProductAttention_1/"
        w[p + "LayerNorm_0/scale"], w[p + "LayerNorm_0/bias"] = sd[b + "norm1.weight"], sd[b + "norm1.bias"]
        w[p + "LayerNorm_2/scale"], w[p + "LayerNorm_2/bias"] = sd[b + "norm2.weight"], sd[b + "norm2.bias"]
        qkv_w, qkv_b = np.split(sd[b + "attn.qkv.weight"], 3), np.split(sd[b + "attn.qkv.bias"], 3)
        for n, wt, bs in zip(("query", "key", "value"), qkv_w, qkv_b):
            w[mha + n + "/kernel"] = wt.T.reshape(d, h, d // h)
            w[mha + n + "/bias"] = bs.reshape(h, d // h)
        w[mha + "out/kernel"] = sd[b + "attn.proj.weight"].reshape(d, h, d // h).transpose(1, 2, 0)
        w[mha + "out/bias"] = sd[b + "attn.proj.bias"]
        for r in range(2):
            w[p + f"MlpBlock_3/Dense_{r}/kernel"] = sd[b + f"mlp.fc{r + 1}.weight"].T
            w[p + f"MlpBlock_3/Dense_{r}/bias"] = sd[b + f"mlp.fc{r + 1}.bias"]
    np.savez(path, **w)


def test_augreg_npz_initialises_vit_adapter_t(tmp_path):
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=10)
    with torch.no_grad():
        for p in vit.parameters():
            p.normal_(0, 0.02)
    path = str(tmp_path / "Ti_16-augreg.npz")
    _write_augreg_npz(vit, path)
    model = _vit_adapter_t(224)
    ck = ViTAdapterCheckpointer(model)
    ck.load(path)
    after = model.state_dict()
    loaded = [k for k in vit.state_dict() if VIT + k in after]
    assert len(loaded) == 2 + 1 + 12 * 12  # patch embed, pos_embed, 12 blocks x 12 tensors
    for k in loaded:
        torch.testing.assert_close(after[VIT + k], vit.state_dict()[k], rtol=0, atol=0, msg=k)
    assert {"cls_token", "head.weight", "norm.weight"} <= set(ck.last_report["dropped"])


def test_big_vision_scanned_npz(tmp_path):
    """big_vision layout: params/ prefix, no cls token, one stacked array per block parameter."""
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, class_token=False,
                            global_pool="avg")
    with torch.no_grad():
        for p in vit.parameters():
            p.normal_(0, 0.02)
    path = str(tmp_path / "plain.npz")
    _write_augreg_npz(vit, path)
    flat = dict(np.load(path))
    w = {"params/pos_embedding": flat["Transformer/posembed_input/pos_embedding"]}
    for k in ("embedding/kernel", "embedding/bias"):
        w["params/" + k] = flat[k]
    rename = {"MultiHeadDotProductAttention_1": "MultiHeadDotProductAttention_0", "MlpBlock_3": "MlpBlock_0",
              "LayerNorm_2": "LayerNorm_1"}
    per_block = sorted({k.split("/", 2)[2] for k in flat if k.startswith("Transformer/encoderblock_0/")})
    for sub in per_block:
        new = sub
        for a, b in rename.items():
            new = new.replace(a, b)
        w["params/Transformer/encoderblock/" + new] = np.stack([flat[f"Transformer/encoderblock_{i}/{sub}"] for i in range(12)])
    np.savez(path, **w)
    model = _vit_adapter_t(224)
    ck = ViTAdapterCheckpointer(model)
    ck.load(path)
    after = model.state_dict()
    for k, v in vit.state_dict().items():
        if k.startswith(("blocks.", "patch_embed.")):
            assert torch.equal(after[VIT + k], v), k
    assert torch.equal(after[VIT + "pos_embed"][:, 1:], vit.pos_embed)  # cls slot added (zeros)
    assert torch.equal(after[VIT + "pos_embed"][:, :1], torch.zeros(1, 1, 192))


def test_beit_style_checkpoint(tmp_path):
    """A BEiT checkpoint with relative position tables is refused by a plain-ViT config (its
    ViT has no relative position bias: the tables would be lost); without tables, BEiT's
    gamma_1 / q_bias / v_bias map onto the plain ViT (zero key bias)."""
    d, depth = 192, 12
    g = torch.Generator().manual_seed(0)
    sd = {"cls_token": torch.randn(1, 1, d, generator=g), "patch_embed.proj.weight": torch.randn(d, 3, 16, 16, generator=g),
          "patch_embed.proj.bias": torch.randn(d, generator=g), "rel_pos_bias.relative_position_bias_table": torch.randn(732, 3)}
    for i in range(depth):
        b = f"blocks.{i}."
        for n in ("norm1", "norm2"):
            sd[b + n + ".weight"], sd[b + n + ".bias"] = torch.randn(d, generator=g), torch.randn(d, generator=g)
        sd[b + "gamma_1"], sd[b + "gamma_2"] = torch.randn(d, generator=g), torch.randn(d, generator=g)
        sd[b + "attn.qkv.weight"] = torch.randn(3 * d, d, generator=g)
        sd[b + "attn.q_bias"], sd[b + "attn.v_bias"] = torch.randn(d, generator=g), torch.randn(d, generator=g)
        sd[b + "attn.relative_position_bias_table"] = torch.randn(732, 3, generator=g)
        sd[b + "attn.relative_position_index"] = torch.zeros(197, 197, dtype=torch.long)
        sd[b + "attn.proj.weight"], sd[b + "attn.proj.bias"] = torch.randn(d, d, generator=g), torch.randn(d, generator=g)
        sd[b + "mlp.fc1.weight"], sd[b + "mlp.fc1.bias"] = torch.randn(4 * d, d, generator=g), torch.randn(4 * d, generator=g)
        sd[b + "mlp.fc2.weight"], sd[b + "mlp.fc2.bias"] = torch.randn(d, 4 * d, generator=g), torch.randn(d, generator=g)
    path = str(tmp_path / "beit.pth")
    torch.save({"model": sd}, path)
    model = _vit_adapter_t(224)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointMismatchError, match="needs a BEiT-Adapter config.*beit_adapter_l_3x_ms") as e:
        ViTAdapterCheckpointer(model).load(path)
    assert "\n" not in str(e.value)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # nothing loaded

    no_tables = {k: v for k, v in sd.items() if "relative_position" not in k}
    torch.save({"model": no_tables}, path)
    ck = ViTAdapterCheckpointer(model)
    ck.load(path)
    after = model.state_dict()
    b = VIT + "blocks.3."
    assert torch.equal(after[b + "gamma1"], sd["blocks.3.gamma_1"])
    want_bias = torch.cat([sd["blocks.3.attn.q_bias"], torch.zeros(d), sd["blocks.3.attn.v_bias"]])
    assert torch.equal(after[b + "attn.qkv.bias"], want_bias)
    assert VIT + "pos_embed" in ck.last_report["missing"]  # this BEiT has no absolute pos-embed either


# ----------------------------------------------------------------------------- size mismatch


def test_checkpoint_of_another_size_gives_a_clear_report(tmp_path):
    t_model = build_tiny(**{**VIT_ADAPTER_PRESETS["T"], "conv_inplane": 16, "window_size": 14})
    path = str(tmp_path / "vit_adapter_t.pth")
    torch.save({"model": {k: v for k, v in t_model.state_dict().items() if k.startswith(VIT)}}, path)
    s_model = build_tiny(**{**VIT_ADAPTER_PRESETS["S"], "conv_inplane": 16, "window_size": 14})
    before = {k: v.clone() for k, v in s_model.state_dict().items()}
    with pytest.raises(CheckpointMismatchError) as e:
        ViTAdapterCheckpointer(s_model).load(path)
    msg = str(e.value)
    assert path in msg
    assert "backbone.bottom_up.patch_embed.proj.weight: checkpoint (192, 3, 16, 16) vs model (384, 3, 16, 16)" in msg
    assert (
        "checkpoint looks like ViT-Adapter-T (embed 192, depth 12) but the model is "
        "ViT-Adapter-S (embed 384, depth 12)" in msg
    )
    assert all(torch.equal(v, before[k]) for k, v in s_model.state_dict().items())  # nothing half-loaded


def test_class_count_change_is_a_fine_tuning_skip_not_an_error(tmp_path):
    src = build_tiny(num_classes=3)
    path = str(tmp_path / "three_classes.pth")
    torch.save({"model": src.state_dict()}, path)
    dst = build_tiny(num_classes=5)
    ck = ViTAdapterCheckpointer(dst)
    ck.load(path)
    skipped = ck.last_report["skipped_shapes"]
    assert sorted(skipped) == sorted(
        f"roi_heads.{n}" for n in ("box_predictor.cls_score.weight", "box_predictor.cls_score.bias",
                                   "box_predictor.bbox_pred.weight", "box_predictor.bbox_pred.bias",
                                   "mask_head.predictor.weight", "mask_head.predictor.bias")
    )
    assert torch.equal(dst.backbone.bottom_up.level_embed, src.backbone.bottom_up.level_embed)


# ----------------------------------------------------------------------------- atomic save


class _Boom(Exception):
    pass


def test_save_is_atomic(tmp_path, monkeypatch):
    model = torch.nn.Linear(3, 3)
    ck = ViTAdapterCheckpointer(model, str(tmp_path))
    ck.save("model_0000001")
    good = (tmp_path / "model_0000001.pth").read_bytes()
    saved_weight = model.weight.detach().clone()

    real_save = torch.save

    def dying_save(obj, f, *a, **k):
        f.write(b"partial bytes")  # the process dies half-way through the write
        raise _Boom()

    monkeypatch.setattr(torch, "save", dying_save)
    with torch.no_grad():
        model.weight.add_(1)
    with pytest.raises(_Boom):
        ck.save("model_0000002")
    with pytest.raises(_Boom):
        ck.save("model_0000001")  # overwrite attempt
    monkeypatch.setattr(torch, "save", real_save)
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_0000001.pth"]  # no partial / temp files
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000001.pth"
    assert (tmp_path / "model_0000001.pth").read_bytes() == good
    fresh = torch.nn.Linear(3, 3)
    ViTAdapterCheckpointer(fresh, str(tmp_path)).resume_or_load("", resume=True)
    assert torch.equal(fresh.weight, saved_weight)


def test_atomic_save_replaces_complete_file(tmp_path):
    path = str(tmp_path / "x.pth")
    atomic_torch_save({"a": torch.ones(1)}, path)
    atomic_torch_save({"a": torch.zeros(1)}, path)
    assert torch.equal(torch.load(path, weights_only=True)["a"], torch.zeros(1))
    assert os.listdir(tmp_path) == ["x.pth"]


# ----------------------------------------------------------------------------- round trip


def _sample(h=64, w=96, seed=0):
    g = torch.Generator().manual_seed(seed)
    img = torch.randint(0, 255, (3, h, w), generator=g).float()
    inst = Instances((h, w))
    inst.gt_boxes = Boxes(torch.tensor([[4.0, 6.0, 40.0, 50.0], [30.0, 10.0, 90.0, 60.0]]))
    inst.gt_classes = torch.tensor([0, 2])
    masks = torch.zeros(2, h, w, dtype=torch.bool)
    masks[0, 6:50, 4:40] = True
    masks[1, 10:60, 30:90] = True
    inst.gt_masks = BitMasks(masks)
    return {"image": img, "height": h, "width": w, "instances": inst}


def test_round_trip_train_publish_load(tmp_path):
    from vit_adapter.tools.publish_checkpoint import publish

    torch.manual_seed(0)
    model = build_tiny()
    model.train()
    data = [[_sample(seed=i)] for i in range(2)]
    optim = torch.optim.AdamW(model.parameters(), lr=1e-3)
    trainer = SimpleTrainer(model, iter(data), optim)
    trainer.train(0, 2)  # 2 iterations
    out_dir = str(tmp_path / "output")
    ViTAdapterCheckpointer(model, out_dir, trainer=trainer, optimizer=optim).save("model_final", iteration=1)
    train_ckpt = torch.load(os.path.join(out_dir, "model_final.pth"), weights_only=True)
    assert {"model", "optimizer", "trainer", "iteration"} <= set(train_ckpt)

    pth, st, sha_pth, sha_st = publish(os.path.join(out_dir, "model_final.pth"), str(tmp_path / "pub" / "tiny.pth"))
    assert set(torch.load(pth, weights_only=True)) == {"model"}
    assert len(sha_pth) == 64 and len(sha_st) == 64

    model.eval()
    image = {"image": _sample(seed=5)["image"], "height": 64, "width": 96}
    with torch.no_grad():
        want_feats = model.backbone(model.preprocess_image([image]).tensor)
        want = model([image])[0]["instances"]
    for path in (pth, st):
        fresh = build_tiny()
        ck = ViTAdapterCheckpointer(fresh)
        ck.load(path)
        assert ck.last_report["missing"] == [] and ck.last_report["unexpected"] == []
        with torch.no_grad():
            got_feats = fresh.backbone(fresh.preprocess_image([image]).tensor)
            got = fresh([image])[0]["instances"]
        for k in want_feats:
            assert torch.equal(got_feats[k], want_feats[k]), (path, k)
        assert torch.equal(got.pred_boxes.tensor, want.pred_boxes.tensor)
        assert torch.equal(got.scores, want.scores)
    assert math.isfinite(float(want_feats["p2"].abs().sum()))


def test_deit_checkpoint_initialises_the_plain_vit_baseline(tmp_path):
    from detectron2.config import LazyConfig, instantiate

    deit = timm.create_model("deit_tiny_patch16_224", pretrained=False)
    path = str(tmp_path / "deit.pth")
    torch.save({"model": deit.state_dict()}, path)
    cfg = LazyConfig.load(os.path.join(REPO_ROOT, "configs/common/models/mask_rcnn_vit_plain.py"))
    cfg.model.backbone.net.update(embed_dim=192, num_heads=3, drop_path_rate=0.0)
    model = instantiate(cfg.model)
    ck = ViTAdapterCheckpointer(model)
    ck.load(path)
    assert ck.last_report["format"] == "imagenet_vit" and ck.last_report["unexpected"] == []
    sd = model.state_dict()
    assert torch.equal(sd["backbone.net.blocks.11.mlp.fc2.weight"], deit.state_dict()["blocks.11.mlp.fc2.weight"])
    assert torch.equal(sd["backbone.net.pos_embed"], deit.state_dict()["pos_embed"])


def test_numpy_imagenet_weights(tmp_path):
    deit = timm.create_model("deit_tiny_patch16_224", pretrained=False, img_size=160)
    path = str(tmp_path / "deit_numpy.pth")
    torch.save({"model": {k: v.numpy() for k, v in deit.state_dict().items()}}, path)
    model = _vit_adapter_t(224)
    ck = ViTAdapterCheckpointer(model)
    ck.load(path)
    assert ck.last_report["pos_embed_resized"] == ((10, 10), (14, 14))
    assert torch.equal(model.backbone.bottom_up.blocks[0].attn.qkv.weight, deit.blocks[0].attn.qkv.weight)
