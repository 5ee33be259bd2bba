"""Modeling: the plain ViT, the adapter modules, the detectron2 backbones and heads."""
