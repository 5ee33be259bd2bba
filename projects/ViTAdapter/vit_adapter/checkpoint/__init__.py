"""Checkpoints: safe file loading, ImageNet / official conversion, the checkpointer, the model zoo."""
