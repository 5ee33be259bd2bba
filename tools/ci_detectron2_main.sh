#!/usr/bin/env bash
# CI on upstream detectron2 main, built from source on CPU as its users install it.
#
#   bash tools/ci_detectron2_main.sh        (called by .ci/run; `make test-d2main`)
#
# 1. a second environment ($D2MAIN_VENV, default .venv-d2main) with torch 2.14.1 and
#    setuptools >= 81 (no pkg_resources, as torch 2.14 brings it);
# 2. detectron2 main from the source snapshot ($D2MAIN_SNAPSHOT, default
#    ../shared/vendor/detectron2-main-02b5c4e2-src.tar.gz) built into a wheel with its
#    C++ ops (`pip wheel --no-build-isolation`, as detectron2's INSTALL.md), cached under
#    $VIT_ADAPTER_CACHE (default ~/.cache/vit_adapter) per snapshot and torch version;
# 3. vit_adapter installed by tools/bootstrap.sh (keeps that torch and detectron2; checks
#    that a config loads and its model builds);
# 4. the test suite; the demo for 20 iterations (tools/run_demo.py); detectron2's own
#    tools/lazyconfig_train_net.py (from the snapshot) on the demo config: 20 training
#    iterations, then --eval-only on the checkpoint it wrote.
# Prints the wall time of each step and the total.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD

SNAPSHOT=${D2MAIN_SNAPSHOT:-$REPO/../shared/vendor/detectron2-main-02b5c4e2-src.tar.gz}
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

if [ ! -f "$SNAPSHOT" ]; then
  echo "[ci-d2main] error: detectron2 main snapshot not found: $SNAPSHOT (set D2MAIN_SNAPSHOT)" >&2
  exit 1
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
SHA=$(sha256sum "$SNAPSHOT" | cut -c1-12)
TORCH=$("$PY" -c "import torch; print(torch.__version__.split('+')[0])")
WHEELS=$CACHE/d2main-wheels/$SHA-torch$TORCH
SRC=$CACHE/d2main-src/$SHA
if [ ! -f "$SRC/tools/lazyconfig_train_net.py" ]; then
  rm -rf "$SRC" && mkdir -p "$SRC"
  tar xzf "$SNAPSHOT" -C "$SRC" --strip-components=1
fi
if ! ls "$WHEELS"/detectron2-*.whl >/dev/null 2>&1; then
  echo "[ci-d2main] building detectron2 from $SNAPSHOT (C++ ops, CPU; a few minutes)"
  BUILD=$(mktemp -d)
  cp -r "$SRC" "$BUILD/detectron2"
  MAX_JOBS=${MAX_JOBS:-2} "$PY" -m pip wheel --disable-pip-version-check -q --no-build-isolation --no-deps \
    -w "$BUILD/wheels" "$BUILD/detectron2"
  mkdir -p "$WHEELS" && mv "$BUILD"/wheels/detectron2-*.whl "$WHEELS"/
  rm -rf "$BUILD"
fi
WHEEL=$(ls "$WHEELS"/detectron2-*.whl | head -n1)
if [ ! -f "$VENV/.detectron2-main-$SHA" ]; then
  pip_install --force-reinstall --no-deps "$WHEEL"
  pip_install "$WHEEL"  # its pure-Python requirements
  touch "$VENV/.detectron2-main-$SHA"
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
