"""Our ViTAdapter vs the released implementation (tools/check_official_backbone.py).

Needs a checkout of czczup/ViT-Adapter: set VIT_ADAPTER_OFFICIAL to its path
(working tree or bare git repository); skipped when there is none.
"""
import os
import sys

import pytest

DEFAULT = "/work/.mirror/czczup+ViT-Adapter/repo"
OFFICIAL = os.environ.get("VIT_ADAPTER_OFFICIAL", DEFAULT)


@pytest.mark.skipif(not os.path.exists(OFFICIAL), reason="no czczup/ViT-Adapter checkout (set VIT_ADAPTER_OFFICIAL)")
def test_backbone_equals_the_release(repo_root, capsys):
    sys.path.insert(0, os.path.join(repo_root, "tools"))
    try:
        import check_official_backbone
    finally:
        sys.path.pop(0)
    assert check_official_backbone.main(["--official", OFFICIAL, "--quick"]) == 0, capsys.readouterr().out
    assert "strict=True" in capsys.readouterr().out
