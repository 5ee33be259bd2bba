"""Deployment: ONNX export (:mod:`vit_adapter.deploy.export`, needs torch) and
:class:`OnnxPredictor` (numpy + onnxruntime only, :mod:`vit_adapter.deploy.predictor`)."""
from vit_adapter.deploy.predictor import DeployError, OnnxPredictor, require

__all__ = ["DeployError", "OnnxPredictor", "require"]
