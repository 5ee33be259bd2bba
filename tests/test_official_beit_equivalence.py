"""Our BEiTAdapter vs the released implementation, both variants (tools/check_official_beit.py).

Needs a checkout of czczup/ViT-Adapter (working tree or bare git repository):
set VIT_ADAPTER_OFFICIAL to its path. Skipped, saying so, when it is not set.
"""
import os

import pytest

OFFICIAL = os.environ.get("VIT_ADAPTER_OFFICIAL", "")
TOL = 1e-5

pytestmark = pytest.mark.skipif(
    not OFFICIAL or not os.path.exists(OFFICIAL),
    reason="needs a czczup/ViT-Adapter checkout: set VIT_ADAPTER_OFFICIAL=/path/to/ViT-Adapter",
)


@pytest.mark.parametrize("variant", ["detection", "segmentation"])
def test_beit_adapter_equals_the_release(variant):
    from vit_adapter.tools import check_official_beit

    lines = []
    results = check_official_beit.run_variant(OFFICIAL, variant, TOL, quick=True, log=lines.append)
    out = "\n".join(lines)
    assert "strict=True" in out
    for path in ("autograd", "no_grad", "inference_mode"):  # every path compared
        assert any(k.startswith(path) for k in results), out
    assert max(results.values()) <= TOL, out

