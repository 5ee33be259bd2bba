#!/usr/bin/env python
"""Make ``import detectron2`` work in the current Python environment.

Order of preference:

1. An importable detectron2 is used untouched (e.g. a GPU user's source build
   of upstream main). ``--force`` overrides this.
2. A wheel already built by this script (cached under
   ``$VIT_ADAPTER_CACHE`` or ``~/.cache/vit_adapter``) is installed.
3. Otherwise the only detectron2 source release reachable from PyPI, the sdist
   ``pb1-detectron2==0.6``, is downloaded (sha256-checked), patched with the
   minimal fixes listed in ``PATCHES`` below, built into a pure-Python wheel
   (no compiled ops, model-zoo configs packaged), cached and installed.

The pure-Python build has no ``detectron2._C``: a stub module stands in for it.
It answers the version queries of ``collect_env`` and raises a clear
``RuntimeError`` when a compiled op (deformable conv, rotated boxes, fast COCO
eval) is called. ``COCOEvaluator`` falls back to pycocotools automatically.

Usage::

    python tools/install_detectron2.py            # install if needed
    python tools/install_detectron2.py --check    # exit 0 iff detectron2 imports
    python tools/install_detectron2.py --force    # rebuild / reinstall ours
"""
import argparse
import hashlib
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile

SDIST_NAME = "pb1-detectron2"
SDIST_VERSION = "0.6"
SDIST_SHA256 = "5d2e9e51e523ec72f6a31cca04b0a515492e9514b773a3d134cedc0677170b29"
# Bump when PATCHES change so that stale cached wheels are not reused.
BUILD_TAG = "purepy4"
WHEEL_VERSION = f"{SDIST_VERSION}+{BUILD_TAG}"

C_STUB = '''"""Stand-in for detectron2's compiled extension (pure-Python build).

This detectron2 was built by vit_adapter's tools/install_detectron2.py from the
pb1-detectron2 0.6 sdist, which does not ship the C++/CUDA sources. Operators
that need them (deformable convolution, rotated boxes / ROIAlignRotated, NMS
rotated, the fast COCO evaluator) are not available. Mask R-CNN / Cascade
Mask R-CNN only need torchvision's ops and work normally.

detectron2 calls its compiled ops two ways: as attributes of this module
(`_C.deform_conv_forward(...)`) and as torch operators registered by the real
extension (`torch.ops.detectron2.nms_rotated(...)`). Both raise the same
one-line RuntimeError here.
"""
import torch

PURE_PYTHON_STUB = True


def get_compiler_version():
    return "not compiled (pure-Python detectron2 build)"


def get_cuda_version():
    return "not compiled (pure-Python detectron2 build)"


def has_cuda():
    return False


def _missing(name):
    return RuntimeError(
        f"detectron2._C.{name} is a compiled operator, and this detectron2 is the "
        "pure-Python build made by tools/install_detectron2.py (no deformable conv, "
        "rotated boxes or fast COCO eval). Build detectron2 from source "
        "(https://github.com/facebookresearch/detectron2) to use it."
    )


def __getattr__(name):
    if name.startswith("__"):
        raise AttributeError(name)
    raise _missing(name)


# The torch operators of detectron2's csrc/vision.cpp (TORCH_LIBRARY(detectron2, ...)).
_TORCH_OPS = {
    "nms_rotated": "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "box_iou_rotated": "(Tensor boxes1, Tensor boxes2) -> Tensor",
    "roi_align_rotated_forward": "(Tensor input, Tensor rois, float spatial_scale, "
    "int pooled_height, int pooled_width, int sampling_ratio) -> Tensor",
    "roi_align_rotated_backward": "(Tensor grad, Tensor rois, float spatial_scale, "
    "int pooled_height, int pooled_width, int batch_size, int channels, int height, "
    "int width, int sampling_ratio) -> Tensor",
}


def _raiser(name):
    def op(*args, **kwargs):
        raise _missing(name)

    return op


def _register_torch_ops():
    if hasattr(torch.ops.detectron2, "nms_rotated"):  # module reloaded: keep the registrations
        return globals().get("_LIBRARY")
    lib = torch.library.Library("detectron2", "DEF")
    for name, schema in _TORCH_OPS.items():
        lib.define(name + schema)
        lib.impl(name, _raiser(name), "CompositeExplicitAutograd")
    return lib


_LIBRARY = _register_torch_ops()  # the registrations live as long as this object
'''

# (file, old, new, why). Every patch must apply exactly as written: a sdist
# that does not match is refused instead of being half-patched.
PATCHES = [
    (
        "setup.py",
        "    ext_modules=get_extensions(),\n",
        "    ext_modules=[],\n",
        "the sdist lacks detectron2/layers/csrc/: build without the C++ extension",
    ),
    (
        "setup.py",
        '    config_paths = glob.glob("configs/**/*.yaml", recursive=True) + glob.glob(\n'
        '        "configs/**/*.py", recursive=True\n'
        "    )\n",
        "    root = path.join(path.dirname(path.realpath(__file__)), 'detectron2', 'model_zoo')\n"
        "    config_paths = [\n"
        "        path.relpath(p, root)\n"
        "        for ext in ('yaml', 'py')\n"
        "        for p in glob.glob(path.join(root, 'configs', '**', '*.' + ext), recursive=True)\n"
        "    ]\n",
        "package the model-zoo configs that the sdist keeps inside detectron2/model_zoo/configs",
    ),
    (
        "setup.py",
        'packages=find_packages(exclude=("configs", "tests*"))',
        'packages=find_packages(exclude=("configs", "tests*", "tools", "tools.*"))',
        "do not install a top-level package named `tools` (it shadows projects' tools/)",
    ),
    (
        "setup.py",
        '    name="pb1-detectron2",\n    version=get_version(),\n',
        f'    name="detectron2",\n    version="{WHEEL_VERSION}",\n',
        "install under detectron2's own distribution name, tagged as this build",
    ),
    (
        "detectron2/data/transforms/transform.py",
        "interp=Image.LINEAR",
        "interp=Image.BILINEAR",
        "Pillow >= 10 removed Image.LINEAR (the same filter as BILINEAR)",
    ),
    (
        "detectron2/model_zoo/model_zoo.py",
        "import pkg_resources\n",
        "",
        "setuptools >= 81 no longer provides pkg_resources",
    ),
    (
        "detectron2/model_zoo/model_zoo.py",
        'cfg_file = pkg_resources.resource_filename(\n        "detectron2.model_zoo", os.path.join("configs", config_path)\n    )',
        'cfg_file = os.path.join(os.path.dirname(__file__), "configs", config_path)',
        "resolve packaged config files without pkg_resources",
    ),
    (
        "detectron2/evaluation/coco_evaluation.py",
        "        self._use_fast_impl = use_fast_impl\n",
        "        from detectron2 import _C\n\n"
        "        if use_fast_impl and getattr(_C, 'PURE_PYTHON_STUB', False):\n"
        "            self._logger.info('No compiled detectron2 ops: using pycocotools COCOeval.')\n"
        "            use_fast_impl = False\n"
        "        self._use_fast_impl = use_fast_impl\n",
        "fall back to pycocotools' COCOeval when the fast C++ evaluator is absent",
    ),
    (
        "detectron2/data/common.py",
        "cur_idx = self._rng.sample(self._fallback_candidates, k=1)[0]",
        "cur_idx = self._rng.sample(sorted(self._fallback_candidates), k=1)[0]",
        "Python >= 3.11 random.sample rejects sets: a mapper returning None crashed the train loader",
    ),
]
# numpy >= 1.24 removed the aliases np.int / np.float / np.str (np.bool is back in 2.x).
NUMPY_ALIAS = re.compile(r"\bnp\.(int|float|str)\b(?![\w.(])")


def log(msg):
    print(f"[install_detectron2] {msg}", flush=True)


def detectron2_importable():
    return importlib.util.find_spec("detectron2") is not None


def cache_dir():
    root = os.environ.get("VIT_ADAPTER_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "vit_adapter"
    )
    os.makedirs(root, exist_ok=True)
    return root


def pip(*args):
    cmd = [sys.executable, "-m", "pip", "--disable-pip-version-check", *args]
    log(" ".join(cmd))
    subprocess.check_call(cmd)


def sha256_of(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fetch_sdist(workdir):
    """Download the sdist without running its setup.py (pip's metadata step
    would try to build the missing C++ extension)."""
    cached = os.path.join(cache_dir(), f"{SDIST_NAME}-{SDIST_VERSION}.tar.gz")
    if not os.path.exists(cached) or sha256_of(cached) != SDIST_SHA256:
        # --no-build-isolation lets pip read metadata with the torch installed here.
        pip("download", "--no-deps", "--no-binary", ":all:", "--no-build-isolation",
            "-d", workdir, f"{SDIST_NAME}=={SDIST_VERSION}")
        (name,) = [f for f in os.listdir(workdir) if f.endswith(".tar.gz")]
        shutil.copy(os.path.join(workdir, name), cached)
    digest = sha256_of(cached)
    if digest != SDIST_SHA256:
        raise SystemExit(f"{cached}: sha256 {digest} != expected {SDIST_SHA256}; refusing to build")
    return cached


def apply_patches(src):
    for rel, old, new, why in PATCHES:
        path = os.path.join(src, rel)
        with open(path) as f:
            text = f.read()
        if text.count(old) != 1:
            raise SystemExit(f"patch for {rel} ({why}) does not apply to this sdist")
        with open(path, "w") as f:
            f.write(text.replace(old, new))
        log(f"patched {rel}: {why}")
    n_alias = 0
    for dirpath, _, files in os.walk(os.path.join(src, "detectron2")):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(dirpath, name)
                with open(path) as f:
                    text = f.read()
                new, n = NUMPY_ALIAS.subn(r"\1", text)
                if n:
                    n_alias += n
                    with open(path, "w") as f:
                        f.write(new)
    log(f"replaced {n_alias} removed numpy aliases (np.int/np.float/np.str) with builtins")
    with open(os.path.join(src, "detectron2", "_C.py"), "w") as f:
        f.write(C_STUB)
    log("added detectron2/_C.py: a stub that names the missing compiled ops when used")


def build_wheel():
    wheel_dir = os.path.join(cache_dir(), "wheels")
    os.makedirs(wheel_dir, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        sdist = fetch_sdist(tmp)
        with tarfile.open(sdist) as tar:
            tar.extractall(tmp, filter="data")
        src = os.path.join(tmp, f"{SDIST_NAME}-{SDIST_VERSION}")
        apply_patches(src)
        pip("wheel", "--no-deps", "--no-build-isolation", "-w", wheel_dir, src)
    return find_cached_wheel()


def find_cached_wheel():
    wheel_dir = os.path.join(cache_dir(), "wheels")
    if not os.path.isdir(wheel_dir):
        return None
    for name in sorted(os.listdir(wheel_dir)):
        if name.startswith(f"detectron2-{WHEEL_VERSION}-") and name.endswith(".whl"):
            return os.path.join(wheel_dir, name)
    return None


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only report whether detectron2 imports")
    parser.add_argument("--force", action="store_true", help="install our build even if detectron2 exists")
    parser.add_argument("--rebuild", action="store_true", help="ignore the cached wheel")
    args = parser.parse_args(argv)

    if detectron2_importable() and not args.force:
        import detectron2

        log(f"detectron2 {detectron2.__version__} already installed at "
            f"{os.path.dirname(detectron2.__file__)}; leaving it untouched")
        return 0
    if args.check:
        log("detectron2 is not installed")
        return 1
    if importlib.util.find_spec("torch") is None:
        raise SystemExit("install torch first (see README: `make install`)")

    wheel = None if args.rebuild else find_cached_wheel()
    if wheel:
        log(f"using cached wheel {wheel}")
    else:
        wheel = build_wheel()
    pip("install", "--force-reinstall" if args.force else "--upgrade", "--no-deps", wheel)
    # Its pure-Python requirements (fvcore, iopath, omegaconf, ...), never torch.
    pip("install", wheel)
    return 0


if __name__ == "__main__":
    sys.exit(main())
