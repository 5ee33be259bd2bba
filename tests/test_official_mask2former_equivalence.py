"""Our Mask2Former head vs the release's, staged (tools/check_official_mask2former.py).

Needs a checkout of czczup/ViT-Adapter (VIT_ADAPTER_OFFICIAL=/path, working
tree or bare repository) and the mmcv 1.5.0 / mmsegmentation 0.20.2 / mmdet
2.22.0 sources with their small pure-Python dependencies (addict, yapf 0.32,
six, terminaltables, prettytable) in a scratch folder
(VIT_ADAPTER_MM_PATH=dir1:dir2; never project dependencies). Skipped, saying
so, without them.
"""
import os

import pytest

OFFICIAL = os.environ.get("VIT_ADAPTER_OFFICIAL", "")
MM_PATH = [p for p in os.environ.get("VIT_ADAPTER_MM_PATH", "").split(os.pathsep) if p]
TOL = 1e-4

pytestmark = pytest.mark.skipif(
    not OFFICIAL or not os.path.exists(OFFICIAL) or not MM_PATH,
    reason="needs a czczup/ViT-Adapter checkout (VIT_ADAPTER_OFFICIAL) and mmcv 1.5 / mmseg 0.20.2 / mmdet 2.22 "
           "sources (VIT_ADAPTER_MM_PATH)",
)


def test_mask2former_head_equals_the_release():
    from vit_adapter.tools import check_official_mask2former

    lines = []
    results = check_official_mask2former.run(OFFICIAL, MM_PATH, TOL, log=lines.append)
    out = "\n".join(lines)
    assert "strict=True" in out
    stages = check_official_mask2former.DIMS["dec_layers"] + 1
    for kind in ("class logits", "mask logits"):
        assert sum(kind in k for k in results) == 2 * stages, out  # every stage, two input sizes
    assert any("pixel decoder mask feature" in k for k in results) and any("semantic" in k for k in results)
    assert max(results.values()) <= TOL, out
