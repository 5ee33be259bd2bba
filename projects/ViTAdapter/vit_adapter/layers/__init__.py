"""Layers: multi-scale deformable attention."""
