"""The detectron2 install step (tools/install_detectron2.py) and what it provides."""
import importlib
import os
import subprocess
import sys

import pytest

from conftest import REPO_ROOT

SCRIPT = os.path.join(REPO_ROOT, "tools", "install_detectron2.py")


def _run(code):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT)


def _load_script():
    spec = importlib.util.spec_from_file_location("install_detectron2", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_existing_detectron2_is_left_untouched():
    import detectron2

    init = detectron2.__file__
    before = os.stat(init).st_mtime_ns
    out = subprocess.run([sys.executable, SCRIPT], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "already installed" in out.stdout and "leaving it untouched" in out.stdout
    assert os.stat(init).st_mtime_ns == before
    check = subprocess.run([sys.executable, SCRIPT, "--check"], capture_output=True, text=True)
    assert check.returncode == 0


@pytest.mark.parametrize(
    "order",
    [
        ["detectron2.modeling", "detectron2.data", "detectron2.engine", "detectron2.evaluation", "vit_adapter.compat"],
        ["vit_adapter.compat", "detectron2.evaluation", "detectron2.engine", "detectron2.data", "detectron2.modeling"],
        ["detectron2.data", "detectron2.evaluation", "detectron2.modeling", "vit_adapter.compat", "detectron2.engine"],
    ],
)
def test_detectron2_subpackages_import_in_any_order(order):
    code = "; ".join(f"import {m}" for m in order)
    code += "; vit_adapter.compat.get_model_zoo_config('common/models/mask_rcnn_fpn.py')"
    out = _run(code)
    assert out.returncode == 0, out.stderr[-2000:]


def test_vit_adapter_without_detectron2_says_how_to_install():
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'detectron2' or name.startswith('detectron2.'):\n"
        "            raise ModuleNotFoundError(\"No module named 'detectron2'\", name=name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import vit_adapter\n"
    )
    out = _run(code)
    assert out.returncode != 0
    assert "vit_adapter needs detectron2" in out.stderr
    assert "tools/install_detectron2.py" in out.stderr


def _uses_pure_python_build():
    from vit_adapter import compat

    return not compat.HAS_COMPILED_OPS


pure_only = pytest.mark.skipif(
    "not __import__('test_install')._uses_pure_python_build()",
    reason="checks the stub of the pure-Python detectron2 build; this detectron2 has compiled ops",
)


@pure_only
def test_compiled_op_placeholder_raises_clear_error():
    import torch
    from detectron2.layers.rotated_boxes import pairwise_iou_rotated

    boxes = torch.tensor([[5.0, 5.0, 4.0, 4.0, 0.0]])
    with pytest.raises(RuntimeError, match=r"box_iou_rotated is a compiled operator.*pure-Python build"):
        pairwise_iou_rotated(boxes, boxes)


@pure_only
def test_torch_ops_of_the_stub_raise_clear_error():
    """0.6 calls nms_rotated as torch.ops.detectron2.nms_rotated, not through `_C`."""
    import torch
    from detectron2 import _C
    from detectron2.layers import nms_rotated

    if "_TORCH_OPS" not in vars(_C):
        pytest.skip("detectron2 built by an older tools/install_detectron2.py: rerun it with --force")
    boxes = torch.tensor([[5.0, 5.0, 4.0, 4.0, 0.0]])
    with pytest.raises(RuntimeError, match=r"^detectron2._C.nms_rotated is a compiled operator.*pure-Python build"):
        nms_rotated(boxes, torch.ones(1), 0.5)


@pure_only
def test_collect_env_works_without_compiled_ops():
    from detectron2.utils.collect_env import collect_env_info

    assert "not compiled (pure-Python detectron2 build)" in collect_env_info()


@pure_only
def test_coco_evaluator_falls_back_to_pycocotools(tmp_path):
    import json

    from detectron2.data import DatasetCatalog, MetadataCatalog
    from detectron2.evaluation import COCOEvaluator

    gt = tmp_path / "gt.json"
    gt.write_text(json.dumps({"images": [], "annotations": [], "categories": [{"id": 1, "name": "a"}]}))
    name = "_test_fallback_empty"
    DatasetCatalog.register(name, lambda: [])
    MetadataCatalog.get(name).set(json_file=str(gt), thing_classes=["a"])
    try:
        evaluator = COCOEvaluator(name, output_dir=str(tmp_path), use_fast_impl=True)
        assert evaluator._use_fast_impl is False
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def test_patches_apply_to_the_released_sdist(tmp_path):
    """Every patch must match the pinned sdist exactly once (the cached copy from install)."""
    mod = _load_script()
    sdist = os.path.join(mod.cache_dir(), f"{mod.SDIST_NAME}-{mod.SDIST_VERSION}.tar.gz")
    if not os.path.exists(sdist):
        pytest.skip("detectron2 was not built by tools/install_detectron2.py here (no cached sdist)")
    import tarfile

    with tarfile.open(sdist) as tar:
        tar.extractall(tmp_path, filter="data")
    src = tmp_path / f"{mod.SDIST_NAME}-{mod.SDIST_VERSION}"
    mod.apply_patches(str(src))
    text = (src / "detectron2" / "data" / "build.py").read_text()
    assert "np.int)" not in text and "dtype=int" in text
    assert "pkg_resources" not in (src / "detectron2" / "model_zoo" / "model_zoo.py").read_text()
    assert (src / "detectron2" / "_C.py").exists()
    # The patched MapDataset retries a skipped (None) item on Python >= 3.11.
    import importlib.util

    spec = importlib.util.spec_from_file_location("patched_d2_common", src / "detectron2" / "data" / "common.py")
    common = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(common)
    assert common.MapDataset([0, 1, 2], lambda x: None if x == 0 else x)[0] in (1, 2)
    with pytest.raises(SystemExit, match="does not apply"):
        mod.apply_patches(str(src))  # a second application finds nothing to patch


def test_c_stub_names_every_compiled_op_in_one_line():
    """The stub `_C` of the pure-Python build: module attributes and torch.ops.detectron2 ops
    (0.6 calls nms_rotated through torch.ops) raise the same one-line RuntimeError."""
    code = (
        "import importlib.util, sys, torch\n"
        f"spec = importlib.util.spec_from_file_location('install_detectron2', {SCRIPT!r})\n"
        "mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)\n"
        "stub = type(sys)('d2_c_stub'); exec(mod.C_STUB, stub.__dict__)\n"
        "b = torch.zeros(1, 5)\n"
        "calls = {\n"
        "    'nms_rotated': lambda: torch.ops.detectron2.nms_rotated(b, torch.zeros(1), 0.5),\n"
        "    'box_iou_rotated': lambda: torch.ops.detectron2.box_iou_rotated(b, b),\n"
        "    'roi_align_rotated_forward': lambda: torch.ops.detectron2.roi_align_rotated_forward(\n"
        "        torch.zeros(1, 1, 4, 4), torch.zeros(1, 6), 1.0, 2, 2, 0),\n"
        "    'deform_conv_forward': lambda: stub.deform_conv_forward(),\n"
        "    'COCOevalAccumulate': lambda: stub.COCOevalAccumulate,\n"
        "}\n"
        "for name, call in calls.items():\n"
        "    try:\n"
        "        call()\n"
        "    except RuntimeError as e:\n"
        "        msg = str(e)\n"
        "        assert '\\n' not in msg and msg.startswith(f'detectron2._C.{name} is a compiled operator'), msg\n"
        "        print('ok', name)\n"
        "assert stub.has_cuda() is False and 'not compiled' in stub.get_compiler_version()\n"
    )
    out = _run(code)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == [w for name in ("nms_rotated", "box_iou_rotated", "roi_align_rotated_forward",
                                                 "deform_conv_forward", "COCOevalAccumulate") for w in ("ok", name)]
