"""Command-line tools. `tools/<name>.py` in the checkout runs `vit_adapter.tools.<name>`."""
