#!/usr/bin/env bash
# CI on upstream detectron2 main, built from source on CPU as its users install it.
#
#   bash tools/ci_detectron2_main.sh [SOURCE]       (called by .ci/run; `make test-d2main`)
#
# SOURCE: detectron2 main as a source checkout (a folder) or a .tar.gz of one; default
# $D2MAIN_SRC, else $D2MAIN_SNAPSHOT, else ../shared/vendor/detectron2-main-02b5c4e2-src.tar.gz
# (this project's CI), else ../detectron2. To get one:
#   git clone https://github.com/facebookresearch/detectron2 ../detectron2
#   make test-d2main D2MAIN_SRC=../detectron2
# D2MAIN_RESOLVE_ONLY=1 prints the source folder and its cache key, and stops.
#
# 1. a second environment ($D2MAIN_VENV, default .venv-d2main) with torch 2.14.1 and
#    setuptools >= 81 (no pkg_resources, as torch 2.14 brings it);
# 2. detectron2 main from SOURCE built into a wheel with its C++ ops (`pip wheel
#    --no-build-isolation`, as detectron2's INSTALL.md), cached under $VIT_ADAPTER_CACHE
#    (default ~/.cache/vit_adapter) per source (tarball sha256 / clean git commit) and
#    torch version (a checkout with local changes is rebuilt every time);
# 3. vit_adapter installed by tools/bootstrap.sh (keeps that torch and detectron2; checks
#    that a config loads and its model builds);
# 4. the test suite; the demo for 20 iterations (tools/run_demo.py); detectron2's own
#    tools/lazyconfig_train_net.py (from the snapshot) on the demo config: 20 training
#    iterations, then --eval-only on the checkpoint it wrote.
# Prints the wall time of each step and the total.
set -euo pipefail
CALLER_PWD=$PWD
cd "$(dirname "$0")/.."
REPO=$PWD

DEFAULT_SNAPSHOT=$REPO/../shared/vendor/detectron2-main-02b5c4e2-src.tar.gz
if [ -n "${1:-}" ]; then
  SOURCE=$1
elif [ -n "${D2MAIN_SRC:-}" ]; then
  SOURCE=$D2MAIN_SRC
elif [ -n "${D2MAIN_SNAPSHOT:-}" ]; then
  SOURCE=$D2MAIN_SNAPSHOT
elif [ -f "$DEFAULT_SNAPSHOT" ]; then
  SOURCE=$DEFAULT_SNAPSHOT
else
  SOURCE=$REPO/../detectron2
fi
case "$SOURCE" in /*) ;; *) SOURCE=$CALLER_PWD/$SOURCE ;; esac  # relative to where it was given
VENV=${D2MAIN_VENV:-.venv-d2main}
CACHE=${VIT_ADAPTER_CACHE:-$HOME/.cache/vit_adapter}
OUT=${D2MAIN_OUT:-output/ci_d2main}
ITERS=20
PY=$VENV/bin/python

T0=$(date +%s)
STEP_T=$T0
step() {  # step NAME: report the previous step's time, start the next
  local now
  now=$(date +%s)
  [ -n "${STEP_NAME:-}" ] && echo "[ci-d2main] ${STEP_NAME}: $((now - STEP_T)) s"
  STEP_NAME=$1
  STEP_T=$now
  echo "[ci-d2main] === $1"
}
pip_install() { "$PY" -m pip install --disable-pip-version-check -q "$@"; }
run_logged() {  # run_logged LOG CMD...: output to LOG; on failure its tail and exit 1
  local log=$1
  shift
  if ! "$@" >"$log" 2>&1; then
    tail -n 40 "$log"
    echo "[ci-d2main] error: failed, full log: $log" >&2
    exit 1
  fi
  grep -E "copypaste: (Task|[0-9])|iter: [0-9]+ " "$log" || true
}

HOW_TO_GET="get one with: git clone https://github.com/facebookresearch/detectron2 ../detectron2, then make test-d2main D2MAIN_SRC=../detectron2 (a checkout or a .tar.gz of one)"
d2_source_error() { echo "[ci-d2main] error: $1; $HOW_TO_GET" >&2; exit 1; }
CACHE_SRC=""  # an unpacked tarball lives in the cache; a checkout is used in place
if [ -d "$SOURCE" ]; then
  SRC=$(cd "$SOURCE" && pwd)
  if git -C "$SRC" rev-parse --is-inside-work-tree >/dev/null 2>&1 && [ -z "$(git -C "$SRC" status --porcelain)" ]; then
    KEY=git-$(git -C "$SRC" rev-parse --short=12 HEAD)
  else
    KEY=""  # local changes or no git: not cached
  fi
elif [ -f "$SOURCE" ]; then
  case "$SOURCE" in
    *.tar.gz | *.tgz) ;;
    *) d2_source_error "$SOURCE is neither a folder nor a .tar.gz of detectron2's source" ;;
  esac
  KEY=$(sha256sum "$SOURCE" | cut -c1-12)
  SRC=$CACHE/d2main-src/$KEY
  CACHE_SRC=$SOURCE
  if [ ! -f "$SRC/tools/lazyconfig_train_net.py" ]; then
    rm -rf "$SRC" && mkdir -p "$SRC"
    tar xzf "$SOURCE" -C "$SRC" --strip-components=1 || d2_source_error "cannot unpack $SOURCE"
  fi
else
  d2_source_error "detectron2 main source not found: $SOURCE"
fi
for f in setup.py detectron2/__init__.py tools/lazyconfig_train_net.py; do
  [ -f "$SRC/$f" ] || d2_source_error "$SOURCE is not detectron2's source (no $f)"
done
echo "[ci-d2main] detectron2 source: $SRC${CACHE_SRC:+ (from $CACHE_SRC)}, cache key: ${KEY:-none (rebuilt)}"
if [ -n "${D2MAIN_RESOLVE_ONLY:-}" ]; then
  exit 0
fi

step "environment ($VENV: torch, setuptools>=81)"
[ -x "$PY" ] || python3 -m venv "$VENV"
if ! "$PY" -c "import torch, torchvision, torchvision.ops; torchvision.ops.nms" 2>/dev/null; then
  pip_install "torch==2.14.1" "torchvision==0.29.1"
fi
pip_install "setuptools>=81" wheel
if "$PY" -c "import pkg_resources" 2>/dev/null; then
  echo "[ci-d2main] note: this environment has pkg_resources; the configs must not need it anyway"
else
  echo "[ci-d2main] no pkg_resources here (setuptools >= 81), as with torch 2.14"
fi

step "detectron2 main: wheel (cached) and install"
TORCH=$("$PY" -c "import torch; print(torch.__version__.split('+')[0])")
if [ -n "$KEY" ]; then
  WHEELS=$CACHE/d2main-wheels/$KEY-torch$TORCH
else
  WHEELS=$(mktemp -d)
fi
if ! ls "$WHEELS"/detectron2-*.whl >/dev/null 2>&1; then
  echo "[ci-d2main] building detectron2 from $SRC (C++ ops, CPU; a few minutes)"
  BUILD=$(mktemp -d)
  cp -r "$SRC" "$BUILD/detectron2"
  rm -rf "$BUILD/detectron2/build"
  MAX_JOBS=${MAX_JOBS:-2} "$PY" -m pip wheel --disable-pip-version-check -q --no-build-isolation --no-deps \
    -w "$BUILD/wheels" "$BUILD/detectron2"
  mkdir -p "$WHEELS" && mv "$BUILD"/wheels/detectron2-*.whl "$WHEELS"/
  rm -rf "$BUILD"
fi
WHEEL=$(ls "$WHEELS"/detectron2-*.whl | head -n1)
if [ -z "$KEY" ] || [ ! -f "$VENV/.detectron2-main-$KEY" ]; then
  pip_install --force-reinstall --no-deps "$WHEEL"
  pip_install "$WHEEL"  # its pure-Python requirements
  [ -z "$KEY" ] || touch "$VENV/.detectron2-main-$KEY"
fi

step "vit_adapter (tools/bootstrap.sh: keeps this torch and detectron2, loads a config, builds its model)"
PYTHON=$PY VENV=$VENV bash tools/bootstrap.sh
"$PY" -c "from vit_adapter import compat; assert compat.HAS_COMPILED_OPS, 'expected the compiled ops of main'"

step "test suite on detectron2 main"
"$PY" -m pytest tests -q -p no:cacheprovider

export DETECTRON2_DATASETS=$REPO/$OUT/datasets  # the demo dataset, generated once, shared below
rm -rf "${OUT:?}/demo" "${OUT:?}/d2_train" "${OUT:?}/d2_eval"
mkdir -p "$OUT"
step "demo: $ITERS iterations (tools/run_demo.py)"
run_logged "$OUT/demo.log" "$PY" tools/run_demo.py --num-vis 2 train.max_iter=$ITERS "train.output_dir=$OUT/demo"
tail -n 3 "$OUT/demo.log"

step "detectron2's tools/lazyconfig_train_net.py: train $ITERS iterations on the demo config"
D2_TOOL=$SRC/tools/lazyconfig_train_net.py
run_logged "$OUT/d2_train.log" "$PY" "$D2_TOOL" --config-file configs/demo/mask_rcnn_vit_adapter_demo.py \
  train.max_iter=$ITERS "train.output_dir=$OUT/d2_train"
test -f "$OUT/d2_train/model_final.pth"
grep -q "copypaste: Task: segm" "$OUT/d2_train.log"  # the final evaluation ran

step "detectron2's tools/lazyconfig_train_net.py --eval-only on that checkpoint"
run_logged "$OUT/d2_eval.log" "$PY" "$D2_TOOL" --config-file configs/demo/mask_rcnn_vit_adapter_demo.py \
  --eval-only "train.init_checkpoint=$OUT/d2_train/model_final.pth" "train.output_dir=$OUT/d2_eval"
grep -q "copypaste: Task: segm" "$OUT/d2_eval.log"
if grep -qE "Some model parameters or buffers are not found|contains keys that are not used" "$OUT/d2_eval.log"; then
  echo "[ci-d2main] error: the checkpoint did not load completely into the model" >&2
  exit 1
fi

step "done"
echo "[ci-d2main] total: $(( $(date +%s) - T0 )) s"
