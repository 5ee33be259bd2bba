#!/usr/bin/env python
"""Install the `vit_adapter` detectron2 project plugin.

detectron2 itself is not a requirement here: PyPI has no `detectron2`
distribution. Install it first (`python tools/install_detectron2.py`, or your
own source build of detectron2); `import vit_adapter` says so when it is missing.
"""
from setuptools import find_packages, setup

setup(
    name="vit_adapter",
    version="0.1.0",
    description="ViT-Adapter (Chen et al., ICLR 2023) as a detectron2 project",
    package_dir={"": "projects/ViTAdapter"},
    packages=find_packages("projects/ViTAdapter"),
    python_requires=">=3.9",  # torch>=2.5 needs 3.9
    license="Apache-2.0",
    install_requires=[
        # torch.serialization.safe_globals (checkpoint loading) is new in 2.5;
        # torch.is_autocast_enabled(device_type) (layers/fast_path.py) in 2.4.
        "torch>=2.5",
        "torchvision>=0.20",  # the release paired with torch 2.5
        "timm>=0.9",
        "fvcore>=0.1.5",
        "iopath>=0.1.7",
        "pycocotools>=2.0.2",
        "safetensors>=0.3",
        "numpy",
        "Pillow",
        "psutil",
        # detectron2.utils.visualizer imports cv2 (the demo / tools/predict.py draw with it);
        # detectron2 itself does not declare it.
        "opencv-python-headless",
        # fvcore's CropTransform.apply_polygons (the 3x+MS random crop of polygon masks) imports it.
        "shapely",
    ],
    extras_require={
        "test": ["pytest>=7", "pytest-timeout"],
        # ONNX export (tools/export_model.py) and vit_adapter.deploy.OnnxPredictor.
        "deploy": ["onnx>=1.16", "onnxruntime>=1.18"],
    },
)
