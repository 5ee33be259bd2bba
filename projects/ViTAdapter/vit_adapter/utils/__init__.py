"""Small utilities with no model or detectron2 knowledge."""
