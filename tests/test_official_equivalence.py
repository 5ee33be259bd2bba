"""Our ViTAdapter vs the released implementation (tools/check_official_backbone.py):
the detection backbone, and the segmentation one (vit_feature="per_interaction").

Needs a checkout of czczup/ViT-Adapter (working tree or bare git repository):
set VIT_ADAPTER_OFFICIAL to its path. Skipped, saying so, when it is not set.
"""
import os

import pytest

OFFICIAL = os.environ.get("VIT_ADAPTER_OFFICIAL", "")


@pytest.mark.skipif(
    not OFFICIAL or not os.path.exists(OFFICIAL),
    reason="needs a czczup/ViT-Adapter checkout: set VIT_ADAPTER_OFFICIAL=/path/to/ViT-Adapter",
)
@pytest.mark.parametrize("variant", ["detection", "segmentation"])
def test_backbone_equals_the_release(capsys, variant):
    from vit_adapter.tools import check_official_backbone

    code = check_official_backbone.main(["--official", OFFICIAL, "--quick", "--variant", variant])
    out = capsys.readouterr().out
    assert code == 0, out
    assert f"variant: {variant}" in out
    assert "strict=True" in out
    assert "eval no_grad" in out  # the fast branches, compared with the release too
    assert "eval no_grad fast branches" in out and "MISSING" not in out
