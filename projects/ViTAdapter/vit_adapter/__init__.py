"""ViT-Adapter (Chen et al., "Vision Transformer Adapter for Dense Predictions",
ICLR 2023) as a detectron2 project."""
try:
    import detectron2  # noqa: F401
except ImportError as e:  # pragma: no cover - exercised in a subprocess test
    raise ImportError(
        "vit_adapter needs detectron2, which is not installed in this Python "
        "environment. PyPI has no `detectron2` package: run "
        "`python tools/install_detectron2.py` from the ViT-Adapter checkout (or `make install`), "
        "or build detectron2 from source (https://github.com/facebookresearch/detectron2)."
    ) from e

import os as _os

__version__ = "0.1.0"

#: The checkout this package runs from (configs/, train_net.py); meaningful for source installs.
REPO_ROOT = _os.path.dirname(_os.path.dirname(_os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))))
