#!/usr/bin/env bash
# Create (if missing) the Python environment and install everything the project needs.
#
#   PYTHON=/path/to/python tools/bootstrap.sh   # use an existing environment instead of .venv
#
# torch: a working torch + torchvision already in the environment (e.g. a GPU
# user's CUDA build) is kept; otherwise torch==2.14.1 torchvision==0.29.1 are installed.
# detectron2: see tools/install_detectron2.py (an existing install is kept).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
PYTHON=${PYTHON:-$VENV/bin/python}
if [ "$PYTHON" = "$VENV/bin/python" ] && [ ! -x "$PYTHON" ]; then
  echo "[bootstrap] creating virtual environment $VENV"
  python3 -m venv "$VENV"
fi
pip_install() { "$PYTHON" -m pip install --disable-pip-version-check -q "$@"; }

if "$PYTHON" -c "import torch, torchvision, torchvision.ops; torchvision.ops.nms" 2>/dev/null; then
  echo "[bootstrap] torch $("$PYTHON" -c 'import torch; print(torch.__version__)') already installed; keeping it"
else
  echo "[bootstrap] installing torch==2.14.1 torchvision==0.29.1"
  pip_install "torch==2.14.1" "torchvision==0.29.1"
fi

"$PYTHON" tools/install_detectron2.py

# --no-build-isolation: building our metadata must not pull another torch.
pip_install --no-build-isolation -e ".[test,deploy]"
# Verify what users run, not only `import detectron2`: load a config, build its model.
"$PYTHON" - <<'EOF'
import os, sys
import detectron2
from detectron2.config import LazyConfig, instantiate
config = "configs/demo/mask_rcnn_vit_adapter_demo.py"
try:
    n = sum(p.numel() for p in instantiate(LazyConfig.load(config).model).parameters())
except Exception as e:
    sys.exit(f"[bootstrap] error: {config} does not load / build with the detectron2 at "
             f"{os.path.dirname(detectron2.__file__)}: {type(e).__name__}: {e}")
print(f"[bootstrap] vit_adapter ready: {config} builds ({n / 1e6:.1f}M parameters) with detectron2 "
      f"{detectron2.__version__} at {os.path.dirname(detectron2.__file__)}")
EOF
