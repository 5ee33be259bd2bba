"""Crafted and damaged checkpoints / model-zoo inputs (issue 16, rows 1-7): each is
refused with one line, and nothing a file holds reaches numpy's unchecked code."""
import io
import json
import logging
import os
import pickle
import stat
import struct
import subprocess
import sys
import urllib.error
import zipfile

import numpy as np
import pytest
import torch
from checkpoint_fixtures import build_tiny

from vit_adapter.checkpoint import io as ckpt_io
from vit_adapter.checkpoint import model_zoo
from vit_adapter.checkpoint.checkpointer import (
    CheckpointChecksumError,
    CheckpointError,
    CheckpointMismatchError,
    CheckpointSourceError,
    CorruptCheckpointError,
    UnsafeCheckpointError,
    ViTAdapterCheckpointer,
    load_checkpoint_file,
    load_for_inference,
)
from vit_adapter.checkpoint.io import read_checkpoint
from conftest import REPO_ROOT


TINY_CONFIG = os.path.join(REPO_ROOT, "tests", "configs", "tiny_mask_rcnn_vit_adapter.py")


# --------------------------------------------------------------------------- hand-written pickles
def _u(s):  # BINUNICODE
    b = s.encode()
    return b"X" + struct.pack("<I", len(b)) + b


def _g(module, name):  # GLOBAL
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def _bytes(s):  # protocol-2 bytes literal: _codecs.encode(str, "latin1")
    return _g("_codecs", "encode") + _u(s) + _u("latin1") + b"\x86R"


def _dtype(descr, state=None):
    """numpy.dtype(descr, False, True) [+ BUILD state given as (order, elsize, alignment, flags)]."""
    p = _g("numpy", "dtype") + _u(descr) + b"\x89\x88\x87R"
    if state is not None:
        order, elsize, align, flags = state
        p += b"(K\x03" + _u(order) + b"NNN" + b"J" + struct.pack("<i", elsize) + b"J" + struct.pack("<i", align)
        p += b"J" + struct.pack("<i", flags) + b"tb"
    return p


def _wrap(value_ops):
    """{"model": {"w": <value>}} around the opcodes of one value."""
    return b"\x80\x02}" + _u("model") + b"}" + _u("w") + value_ops + b"ss."


# The segfault of the adversarial run: a copy of the object dtype with its flags cleared
# by __setstate__, then multiarray.scalar(dtype, 8 attacker bytes) -> a PyObject* from the file.
OBJECT_SCALAR = _wrap(_g("numpy._core.multiarray", "scalar") + _dtype("O", ("|", 8, 8, 0)) + _bytes("A" * 8) + b"\x86R")

CRAFTED = {
    "object dtype scalar": OBJECT_SCALAR,
    "object dtype scalar (numpy.core)": OBJECT_SCALAR.replace(b"numpy._core.", b"numpy.core."),
    "float dtype given object flags": _wrap(
        _g("numpy.core.multiarray", "scalar") + _dtype("f8", ("<", 8, 8, 0x3F)) + _bytes("A" * 8) + b"\x86R"),
    "float dtype given another itemsize": _wrap(
        _g("numpy.core.multiarray", "scalar") + _dtype("f8", ("<", 64, 8, 0)) + _bytes("A" * 64) + b"\x86R"),
    "scalar with too few bytes": _wrap(_g("numpy.core.multiarray", "scalar") + _dtype("f8", ("<", -1, -1, 0)) + _bytes("A") + b"\x86R"),
    "structured dtype": _wrap(_g("numpy.core.multiarray", "scalar") + _dtype("V8") + _bytes("A" * 8) + b"\x86R"),
    "array with more elements than bytes": _wrap(
        _g("numpy.core.multiarray", "_reconstruct") + _g("numpy", "ndarray") + b"K\x00\x85" + _bytes("b") + b"\x87R"
        + b"(K\x01J\x00\xca\x9a\x3b\x85" + _dtype("f4", ("<", -1, -1, 0)) + b"\x89" + _bytes("AAAA") + b"tb"),
    "object array": _wrap(
        _g("numpy.core.multiarray", "_reconstruct") + _g("numpy", "ndarray") + b"K\x00\x85" + _bytes("b") + b"\x87R"
        + b"(K\x01K\x01\x85" + _dtype("O", ("|", 8, 8, 63)) + b"\x89]tb"),
    "numpy dtype class": _wrap(_g("numpy.dtypes", "ObjectDType") + b")R"),
}


def torch_zip_with(pkl: bytes, path):
    """A PyTorch zip checkpoint whose data.pkl is `pkl` (the other records from torch.save)."""
    buf = io.BytesIO()
    torch.save({}, buf)
    src = zipfile.ZipFile(io.BytesIO(buf.getvalue()))
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, pkl if info.filename.endswith("/data.pkl") else src.read(info))
    return str(path)


_LOAD_EACH = """
import sys
from vit_adapter.checkpoint.io import CheckpointError, load_checkpoint_file
for path in sys.argv[1:]:
    try:
        load_checkpoint_file(path)
        print("LOADED", path)
    except CheckpointError as e:
        print(type(e).__name__, "|", str(e).replace("\\n", "<NEWLINE>"))
    sys.stdout.flush()
"""


def test_crafted_numpy_pickles_are_refused_in_a_subprocess(tmp_path):
    """Every crafted variant, as .pkl and inside a PyTorch zip, in a child process: a segfault
    there fails this test instead of killing pytest."""
    paths = []
    for i, payload in enumerate(CRAFTED.values()):
        (tmp_path / f"{i}.pkl").write_bytes(payload)
        paths += [str(tmp_path / f"{i}.pkl"), torch_zip_with(payload, tmp_path / f"{i}.pth")]
    r = subprocess.run([sys.executable, "-c", _LOAD_EACH, *paths], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"rc {r.returncode} (-11 = segfault): {r.stdout[-1500:]} {r.stderr[-1500:]}"
    lines = r.stdout.splitlines()
    assert len(lines) == len(paths)
    for name, line in zip([n for n in CRAFTED for _ in (0, 1)], lines):
        assert line.startswith("UnsafeCheckpointError | refusing to load"), (name, line)
        assert "<NEWLINE>" not in line, (name, line)
    assert "not a plain numeric dtype" in lines[0] and "can corrupt memory" in lines[0]


def test_pkl_codecs_encode_is_only_a_latin1_bytes_literal(tmp_path):
    # (torch's own weights_only unpickler allows _codecs.encode for any text codec: data only)
    path = tmp_path / "codec.pkl"
    path.write_bytes(_wrap(_g("_codecs", "encode") + _u("x") + _u("rot13") + b"\x86R"))
    with pytest.raises(UnsafeCheckpointError, match=r"_codecs.encode\(str, 'rot13'\) is not a latin-1 bytes literal"):
        load_checkpoint_file(str(path))


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_benign_numpy_pickles_load_exactly(tmp_path, protocol):
    """Plain numeric arrays and scalars of every pickle protocol (protocol 2 needs _codecs.encode)."""
    data = {
        "model": {
            "f32": np.arange(6, dtype=np.float32).reshape(2, 3),
            "fortran": np.asfortranarray(np.arange(12, dtype=np.float64).reshape(3, 4)),
            "big_endian": np.arange(4, dtype=">i4"),
            "bool": np.array([True, False]),
            "complex": np.array([1 + 2j], dtype=np.complex64),
            "empty": np.zeros((0, 3), dtype=np.uint8),
            "zero_d": np.array(3.5),
        },
        "scalars": [np.float64(1.5), np.int64(-7), np.bool_(True)],
        "dtype": np.dtype("<f2"),
    }
    path = tmp_path / "benign.pkl"
    path.write_bytes(pickle.dumps(data, protocol=protocol))
    got = load_checkpoint_file(str(path))
    for k, v in data["model"].items():
        assert got["model"][k].dtype == v.dtype and np.array_equal(got["model"][k], v), k
        assert got["model"][k].flags.writeable
    assert got["scalars"] == data["scalars"] and [type(x) for x in got["scalars"]] == [type(x) for x in data["scalars"]]
    assert got["dtype"] == data["dtype"]


def test_numpy_arrays_inside_a_torch_checkpoint_load(tmp_path):
    path = tmp_path / "np.pth"
    arr = np.arange(5, dtype=np.float32)
    torch.save({"model": {"w": arr, "empty": np.zeros(0, np.float32)}, "iteration": np.int64(3)}, path)
    got = load_checkpoint_file(str(path))
    assert np.array_equal(got["model"]["w"], arr) and got["iteration"] == 3 and got["model"]["empty"].shape == (0,)


# --------------------------------------------------------------------------- integrity: CRC, sidecar
def _flip_tensor_byte(path, tensor):
    data = bytearray(open(path, "rb").read())
    at = data.find(tensor.numpy().tobytes())
    assert at > 0
    data[at + 5] ^= 0x10
    open(path, "wb").write(bytes(data))


def test_bit_flipped_pth_is_refused_by_its_crc(tmp_path):
    w = torch.arange(64, dtype=torch.float32)
    path = str(tmp_path / "model.pth")
    torch.save({"model": {"w": w}}, path)
    _flip_tensor_byte(path, w)
    with pytest.raises(CorruptCheckpointError, match=r"zip member .*data/0 fails its CRC check") as e:
        load_checkpoint_file(path)
    assert "\n" not in str(e.value)


def test_sha256_sidecar_is_checked(tmp_path):
    w = torch.arange(64, dtype=torch.float32)
    path = str(tmp_path / "model.pth")
    torch.save({"model": {"w": w}}, path)
    with open(path + ".sha256", "w") as f:
        f.write(f"{model_zoo.sha256sum(path)}  model.pth\n")
    assert torch.equal(load_checkpoint_file(path)["model"]["w"], w)
    _flip_tensor_byte(path, w)
    with pytest.raises(CheckpointChecksumError, match=r"model.pth is [0-9a-f]{64}, .*model.pth.sha256 records") as e:
        load_checkpoint_file(path)
    assert "\n" not in str(e.value)
    with open(path + ".sha256", "w") as f:
        f.write("not a digest\n")
    with pytest.raises(CorruptCheckpointError, match="does not start with a sha256 hex digest"):
        load_checkpoint_file(path)


def test_publish_writes_sidecars_that_the_loader_checks(tmp_path, capsys):
    from vit_adapter.tools.publish_checkpoint import main as publish

    src = tmp_path / "model_final.pth"
    torch.save({"model": {"w": torch.ones(3)}, "iteration": 9}, src)
    dst = tmp_path / "pub" / "m.pth"
    publish([str(src), str(dst)])
    for path in (str(dst), str(tmp_path / "pub" / "m.safetensors")):
        digest = open(path + ".sha256").read().split()
        assert digest == [model_zoo.sha256sum(path), os.path.basename(path)]
        assert torch.equal(load_checkpoint_file(path).get("model", load_checkpoint_file(path))["w"], torch.ones(3))
    with open(dst, "ab") as f:
        f.write(b"x")
    with pytest.raises(CheckpointChecksumError):
        load_checkpoint_file(str(dst))


# --------------------------------------------------------------------------- size limits before inflating
def _npz(path, members, compression=zipfile.ZIP_DEFLATED):
    with zipfile.ZipFile(path, "w", compression) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return str(path)


def _npy_bytes(arr):
    buf = io.BytesIO()
    np.lib.format.write_array(buf, arr)
    return buf.getvalue()


def test_inflating_npz_is_refused_before_numpy_reads_it(tmp_path, monkeypatch):
    # 8 MiB of zeros in a few KB; the limit is scaled down (4x the file + 0 slack) to keep the test small.
    path = _npz(tmp_path / "bomb.npz", {"embedding/kernel.npy": _npy_bytes(np.zeros((2 << 20,), np.float32))})
    assert os.path.getsize(path) < 64 << 10
    monkeypatch.setattr(ckpt_io, "_INFLATION_SLACK", 0)
    monkeypatch.setattr(np, "load", lambda *a, **k: pytest.fail("np.load reached"))
    with pytest.raises(CorruptCheckpointError, match=r"zip members declare 8 MiB, more than 4x the file's size") as e:
        load_checkpoint_file(path)
    assert "\n" not in str(e.value)


def test_npy_header_larger_than_its_member_is_refused(tmp_path):
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": (10**9,)})
    path = _npz(tmp_path / "liar.npz", {"embedding/kernel.npy": header.getvalue() + b"\0" * 16}, zipfile.ZIP_STORED)
    with pytest.raises(CorruptCheckpointError, match=r"declares a \(1000000000,\) float32 array \(4000000000 bytes\)"):
        load_checkpoint_file(path)


def test_compressed_member_of_a_torch_zip_is_limited_too(tmp_path, monkeypatch):
    buf = io.BytesIO()
    torch.save({"model": {"w": torch.zeros(1 << 20)}}, buf)
    src = zipfile.ZipFile(io.BytesIO(buf.getvalue()))
    path = tmp_path / "deflated.pth"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info))
    monkeypatch.setattr(ckpt_io, "_INFLATION_SLACK", 0)
    with pytest.raises(CorruptCheckpointError, match="more than 4x the file's size"):
        load_checkpoint_file(str(path))


# --------------------------------------------------------------------------- partly unloaded models
@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return build_tiny(num_classes=3)


def test_checkpoint_matching_no_model_key_is_refused(tmp_path, tiny):
    path = str(tmp_path / "other.pth")
    torch.save({"model": {"encoder.layer.0.weight": torch.zeros(2)}}, path)
    for require in (False, True):
        with pytest.raises(CheckpointMismatchError, match="has no tensor of this model: none of its 1 keys"):
            ViTAdapterCheckpointer(tiny, require_complete=require).load(path)


def test_inference_refuses_a_partial_checkpoint_naming_the_modules(tmp_path, tiny):
    sd = {k: v for k, v in tiny.state_dict().items() if not k.startswith("roi_heads.mask_head.") and "level_embed" not in k}
    path = str(tmp_path / "partial.pth")
    torch.save({"model": sd}, path)
    ViTAdapterCheckpointer(tiny).load(path)  # training init: allowed, the rest keeps its init
    with pytest.raises(CheckpointMismatchError) as e:
        load_for_inference(tiny, path)
    msg = str(e.value)
    assert "not in the checkpoint: roi_heads.mask_head (" in msg
    assert "not in the checkpoint: backbone.bottom_up.level_embed\n" in msg + "\n"
    assert "random initialisation" in msg


def test_inference_refuses_class_count_skips(tmp_path, tiny):
    sd = dict(tiny.state_dict())
    sd["roi_heads.box_predictor.cls_score.weight"] = torch.zeros(6, sd["roi_heads.box_predictor.cls_score.weight"].shape[1])
    sd["roi_heads.box_predictor.cls_score.bias"] = torch.zeros(6)
    path = str(tmp_path / "other_classes.pth")
    torch.save({"model": sd}, path)
    ck = ViTAdapterCheckpointer(tiny)
    ck.load(path)
    assert sorted(ck.last_report["skipped_shapes"]) == ["roi_heads.box_predictor.cls_score.bias", "roi_heads.box_predictor.cls_score.weight"]
    with pytest.raises(CheckpointMismatchError, match=r"cls_score.weight: checkpoint \(6, \d+\) vs model \(4, \d+\)"):
        load_for_inference(tiny, path)


def test_complete_checkpoint_loads_for_inference(tmp_path, tiny):
    path = str(tmp_path / "full.pth")
    torch.save({"model": tiny.state_dict()}, path)
    rep = load_for_inference(tiny, path)
    assert rep["missing"] == [] and rep["skipped_shapes"] == []


# --------------------------------------------------------------------------- one-line errors
@pytest.mark.parametrize(
    "name,content",
    [
        ("str.pth", {"model": {"a": "str"}}),
        ("int.pth", {"model": 5}),
        ("blobs.pkl", {"blobs": 5}),
        ("pycls.pyth", {"model_state": 5}),
        ("list.pth", [1, 2]),
        ("int_keys.pth", {"model": {1: torch.zeros(1)}}),
        ("state_dict.pth", {"state_dict": 5}),
    ],
)
def test_odd_contents_are_one_line_errors(tmp_path, tiny, name, content):
    path = str(tmp_path / name)
    if name.endswith(".pkl"):
        with open(path, "wb") as f:
            pickle.dump(content, f, protocol=2)
    else:
        torch.save(content, path)
    with pytest.raises(CorruptCheckpointError) as e:
        ViTAdapterCheckpointer(tiny).load(path)
    assert path in str(e.value) and "\n" not in str(e.value)


def test_torch_zip_named_pkl_loads_by_content(tmp_path, tiny):
    path = str(tmp_path / "renamed.pkl")
    torch.save({"model": tiny.state_dict()}, path)
    assert read_checkpoint(path)[1] == "torch_zip"
    ck = ViTAdapterCheckpointer(tiny)
    ck.load(path)
    assert ck.last_report["format"] == "detectron2" and ck.last_report["missing"] == []


def test_unknown_zoo_name_is_one_line_with_a_suggestion(tiny):
    with pytest.raises(CheckpointSourceError, match=r"no model-zoo entry 'mask_rcnn_vit_adapter_t_3x_sm'; did you mean 'mask_rcnn_vit_adapter_t_3x_ms'\?") as e:
        ViTAdapterCheckpointer(tiny).load("vit_adapter://mask_rcnn_vit_adapter_t_3x_sm")
    assert "\n" not in str(e.value)
    with pytest.raises(KeyError):  # the model-zoo API keeps its KeyError
        model_zoo.get("nope")


def test_offline_download_is_one_line(tiny, monkeypatch, tmp_path):
    monkeypatch.setenv("FVCORE_CACHE", str(tmp_path / "cache"))

    def offline(*a, **k):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(model_zoo.urllib.request, "urlopen", offline)
    with pytest.raises(CheckpointSourceError, match=r"cannot download https://github.com/.*\.pth\.tar \(\[Errno -3\].*offline\?") as e:
        ViTAdapterCheckpointer(tiny).load("vit_adapter://mask_rcnn_vit_adapter_t_3x_ms")
    assert "\n" not in str(e.value)
    assert not os.listdir(os.path.dirname(model_zoo.cache_path(model_zoo.get_checkpoint_url("mask_rcnn_vit_adapter_t_3x_ms"))))


def test_file_url_is_a_local_path(tmp_path, tiny):
    path = tmp_path / "full.pth"
    torch.save({"model": tiny.state_dict()}, path)
    load_for_inference(tiny, path.as_uri())
    with pytest.raises(CheckpointError, match="checkpoint not found: .*missing.pth"):
        ViTAdapterCheckpointer(tiny).load((tmp_path / "missing.pth").as_uri())


def test_model_zoo_json_with_an_unknown_field(tmp_path, monkeypatch):
    path = tmp_path / "zoo.json"
    path.write_text(json.dumps([{"name": "x", "config": "c.py", "url": "/x.pth", "shaa256": "ab"}]))
    monkeypatch.setenv(model_zoo.MODEL_ZOO_ENV, str(path))
    with pytest.raises(model_zoo.ModelZooError, match=r"entry 0 has unknown field\(s\) \['shaa256'\]; the fields are \['name',"):
        model_zoo.list_models()
    path.write_text(json.dumps([5]))
    with pytest.raises(model_zoo.ModelZooError, match="entry 0 is a int, not an object"):
        model_zoo.list_models()
    path.write_text(json.dumps({"name": "x", "config": "c.py", "url": "/x.pth", "box_ap": "high"}))
    with pytest.raises(model_zoo.ModelZooError, match="entry 0 field 'box_ap' is 'high', expected a number or null"):
        model_zoo.list_models()


# --------------------------------------------------------------------------- model-zoo cache and sha256
def test_cache_path_keys_the_whole_url_and_stays_in_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FVCORE_CACHE", str(tmp_path / "cache"))
    root = os.path.realpath(tmp_path / "cache" / "vit_adapter")
    gh = "https://github.com/czczup/ViT-Adapter/releases/download/v0.1.2/m.pth.tar"
    other_host = gh.replace("github.com", "evil.example")
    paths = {u: model_zoo.cache_path(u) for u in (gh, other_host, gh + "?x=1", "https://a.b/../../../../etc/passwd",
                                                      "https://a.b/%2e%2e/%2e%2e/x", "https://a.b/..")}
    assert len(set(paths.values())) == len(paths)  # host and query are part of the key
    for p in paths.values():
        assert os.path.commonpath([root, p]) == root and ".." not in p.split(os.sep)
    # spellings of one URL share the cache file
    assert model_zoo.cache_path("HTTPS://GitHub.com:443/czczup/./ViT-Adapter/x/../releases/download/v0.1.2/m.pth.tar#frag") == paths[gh]


def test_sha256_applies_to_every_spelling_of_a_registered_url():
    url = model_zoo.get_checkpoint_url("mask_rcnn_vit_adapter_t_3x_ms")
    model_zoo.register(model_zoo.ModelZooEntry("hardening_test", "c.py", "https://example.org/a/b.pth", "0" * 64))
    for variant in ("https://example.org/a/b.pth", "https://EXAMPLE.org/a/./c/../b.pth", "https://example.org//a/b.pth?x=1"):
        assert model_zoo.resolve(variant) == (variant, "0" * 64), variant
    assert model_zoo.resolve(url + "?x=1")[1] is None  # official: no published digest


class _Response(io.BytesIO):
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def test_download_checks_the_registered_digest_and_records_first_use(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("FVCORE_CACHE", str(tmp_path / "cache"))
    payload = io.BytesIO()
    torch.save({"model": {"w": torch.ones(2)}}, payload)
    monkeypatch.setattr(model_zoo.urllib.request, "urlopen", lambda url, timeout: _Response(payload.getvalue()))
    import hashlib

    good = hashlib.sha256(payload.getvalue()).hexdigest()
    model_zoo.register(model_zoo.ModelZooEntry("hardening_bad", "c.py", "https://example.org/bad.pth", "1" * 64))
    with pytest.raises(model_zoo.ChecksumError, match="expects 1111"):
        model_zoo.get_local_path("vit_adapter://hardening_bad")
    assert not os.path.exists(model_zoo.cache_path("https://example.org/bad.pth"))  # nothing kept
    model_zoo.register(model_zoo.ModelZooEntry("hardening_good", "c.py", "https://example.org/good.pth", good))
    assert model_zoo.sha256sum(model_zoo.get_local_path("vit_adapter://hardening_good")) == good
    with caplog.at_level(logging.WARNING, logger=model_zoo.__name__):
        local = model_zoo.get_local_path("https://example.org/unregistered.pth")
    assert "no registered sha256 (unverified): trusted on first download" in caplog.text
    assert open(local + ".sha256").read().split()[0] == good
    with open(local, "ab") as f:  # the cached file changes later: its recorded digest catches it
        f.write(b"x")
    with pytest.raises(CheckpointChecksumError):
        load_checkpoint_file(local)


# --------------------------------------------------------------------------- saves: permissions, stale temps
@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_saved_files_follow_the_umask(tmp_path, tiny, umask):
    old = os.umask(umask)
    try:
        ViTAdapterCheckpointer(tiny, str(tmp_path)).save("model_0000001")
    finally:
        os.umask(old)
    for name in ("model_0000001.pth", "last_checkpoint"):
        assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == 0o666 & ~umask, name


def test_stale_temp_files_of_a_killed_save_are_removed(tmp_path, tiny):
    ours = [".model_0000009.pth.ab12cd_9.tmp", ".last_checkpoint.zz99yy88.tmp"]
    others = [".model_0000009.pth.tmp", ".notes.txt.ab12cd34.tmp", "model_0000009.pth.ab12cd34.tmp", ".data.ab12cd34.tmp"]
    for name in ours + others:
        (tmp_path / name).write_bytes(b"partial")
    ViTAdapterCheckpointer(tiny, str(tmp_path)).save("model_0000010")
    left = set(os.listdir(tmp_path))
    assert not left & set(ours)
    assert set(others) <= left and {"model_0000010.pth", "last_checkpoint"} <= left


# --------------------------------------------------------------------------- through train_net.py
def test_train_net_eval_only_refuses_the_crafted_file_with_one_line(tmp_path):
    crafted = torch_zip_with(OBJECT_SCALAR, tmp_path / "crafted.pth")
    env = dict(os.environ, DETECTRON2_DATASETS=str(tmp_path / "datasets"), OMP_NUM_THREADS="1")
    cmd = [sys.executable, os.path.join(REPO_ROOT, "train_net.py"), "--config-file", TINY_CONFIG, "--eval-only",
           f"train.init_checkpoint={crafted}", f"train.output_dir={tmp_path / 'out'}"]
    r = subprocess.run(cmd, env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 1, (r.returncode, r.stderr[-2000:])  # -11 would be the segfault
    last = r.stderr.strip().splitlines()[-1]
    assert "Traceback" not in r.stderr, r.stderr[-2000:]
    assert last.startswith(f"train_net.py: error: refusing to load {crafted}: it holds numpy data"), last
