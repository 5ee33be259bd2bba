"""The README's commands, extracted from README.md (issue 16 item 3).

* Every `python ...` command of the README parses with its tool's own parser, names a
  config file that exists (or the one the README writes), and its key=value overrides
  are keys of that config.
* The own-data recipe runs end to end: its config file is written as the README shows
  it, with two substitutions (a tiny model instead of the COCO config it imports, a
  generated 5-class dataset instead of /data/my), and its three commands run verbatim.
"""
import json
import os
import re
import shlex
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image, ImageDraw

from conftest import REPO_ROOT

README = os.path.join(REPO_ROOT, "README.md")


def _blocks(lang):
    with open(README) as f:
        return re.findall(rf"```{lang}\n(.*?)```", f.read(), flags=re.S)


def _commands():
    """Each `python ...` command of the README's bash blocks (continuation lines joined)."""
    commands = []
    for block in _blocks("bash"):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("#")[0].strip()
            if line.startswith("python "):
                commands.append(shlex.split(line))
    return commands


def _own_data_section():
    with open(README) as f:
        text = f.read()
    section = text[text.index("### On your own COCO-format data"):]
    section = section[: section.index("\n## ")]
    (config,) = re.findall(r"```python\n(# configs/my_data.py\n.*?)```", section, flags=re.S)
    (bash,) = re.findall(r"```bash\n(.*?)```", section, flags=re.S)
    return config, [shlex.split(line) for line in bash.strip().splitlines()]


def _parse(argv):
    """(config file, overrides) of a README command, parsed by the tool's own parser."""
    script, args = argv[1], argv[2:]
    if script == "train_net.py":
        from detectron2.engine import default_argument_parser

        ns = default_argument_parser().parse_args(args)
    elif script == "tools/predict.py":
        from vit_adapter.tools import predict

        ns = predict.get_parser().parse_args(args)
    elif script == "tools/export_model.py":
        from vit_adapter.tools import export_model

        ns = export_model.get_parser().parse_args(args)
    else:
        return None, []
    return ns.config_file, list(ns.opts)


def test_readme_has_the_commands():
    scripts = {argv[1] for argv in _commands()}
    assert {"train_net.py", "tools/predict.py", "tools/export_model.py"} <= scripts


@pytest.mark.parametrize("argv", _commands(), ids=lambda a: " ".join(a[1:4]))
def test_readme_command_parses_and_its_overrides_are_config_keys(argv):
    from detectron2.config import LazyConfig

    from vit_adapter.engine.overrides import apply_overrides

    assert os.path.isfile(os.path.join(REPO_ROOT, argv[1])), argv[1]
    config, opts = _parse(argv)
    if config is None or config == "configs/my_data.py":  # written by the README (tested below)
        return
    assert os.path.isfile(os.path.join(REPO_ROOT, config)), config
    apply_overrides(LazyConfig.load(os.path.join(REPO_ROOT, config)), opts)  # strict: unknown key -> error


def _tiny_config(repo_configs):
    """tests/configs/demo_tiny.py, importable from a configs/ folder."""
    with open(os.path.join(REPO_ROOT, "tests", "configs", "demo_tiny.py")) as f:
        text = f.read()
    return text.replace("from ...configs.demo.", "from .demo.")


def _coco_split(root, split, n_images, classes):
    """A COCO instances file of `n_images` 64 px images, one rectangle of each class per image."""
    os.makedirs(os.path.join(root, split), exist_ok=True)
    rng = np.random.default_rng(len(split))
    images, annotations = [], []
    for i in range(n_images):
        img = Image.fromarray(rng.integers(0, 60, (64, 64, 3), dtype=np.uint8))
        draw = ImageDraw.Draw(img)
        for c in range(len(classes)):
            x, y = 4 + 11 * c, 8 + 9 * ((i + c) % 5)
            draw.rectangle([x, y, x + 9, y + 12], fill=(50 * c, 255 - 40 * c, 120))
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "category_id": c + 1,
                                "bbox": [x, y, 10, 13], "area": 130, "iscrowd": 0,
                                "segmentation": [[x, y, x + 10, y, x + 10, y + 13, x, y + 13]]})
        img.save(os.path.join(root, split, f"{i:03d}.png"))
        images.append({"id": i + 1, "file_name": f"{i:03d}.png", "width": 64, "height": 64})
    os.makedirs(os.path.join(root, "annotations"), exist_ok=True)
    with open(os.path.join(root, "annotations", f"{split}.json"), "w") as f:
        json.dump({"images": images, "annotations": annotations,
                   "categories": [{"id": c + 1, "name": n} for c, n in enumerate(classes)]}, f)


def _deit_checkpoint(path):
    """An ImageNet ViT checkpoint (DeiT's {"model": ...} layout) of the tiny model's ViT size."""
    import timm
    import torch

    vit = timm.models.vision_transformer.VisionTransformer(img_size=64, embed_dim=48, depth=4, num_heads=3)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    torch.save({"model": vit.state_dict()}, path)


def test_own_data_recipe_runs_verbatim(tmp_path):
    config, commands = _own_data_section()
    clone = tmp_path / "clone"
    (clone / "configs").mkdir(parents=True)
    for entry in os.listdir(os.path.join(REPO_ROOT, "configs")):
        os.symlink(os.path.join(REPO_ROOT, "configs", entry), clone / "configs" / entry)
    (clone / "configs" / "tiny.py").write_text(_tiny_config(clone / "configs"))
    # the two substitutions: the tiny model, the generated dataset
    assert "from .COCO.mask_rcnn_vit_adapter_s_3x_ms import" in config and "/data/my" in config
    config = config.replace("from .COCO.mask_rcnn_vit_adapter_s_3x_ms import", "from .tiny import")
    config = config.replace("/data/my", str(tmp_path / "data" / "my"))
    (clone / "configs" / "my_data.py").write_text(config)
    classes = ["a", "b", "c", "d", "e"]
    assert "model.roi_heads.num_classes = 5" in config
    _coco_split(str(tmp_path / "data" / "my"), "train", 4, classes)
    _coco_split(str(tmp_path / "data" / "my"), "val", 2, classes)
    init = re.search(r'train.init_checkpoint = "(.*?)"', config).group(1)
    _deit_checkpoint(str(clone / init))
    shutil.copy(os.path.join(REPO_ROOT, "train_net.py"), clone)
    (clone / "tools").mkdir()
    shutil.copy(os.path.join(REPO_ROOT, "tools", "predict.py"), clone / "tools")
    (clone / "imgs").mkdir()
    shutil.copy(tmp_path / "data" / "my" / "val" / "000.png", clone / "imgs")

    env = dict(os.environ, OMP_NUM_THREADS="1", DETECTRON2_DATASETS=str(tmp_path / "datasets"))
    assert len(commands) == 3
    for argv in commands:
        assert argv[0] == "python"
        r = subprocess.run([sys.executable, *argv[1:]], cwd=clone, env=env, capture_output=True, text=True,
                           timeout=600)
        assert r.returncode == 0, (argv, r.stderr[-3000:])
    assert (clone / "output" / "my_data" / "model_final.pth").is_file()
    assert (clone / "vis" / "000.png").is_file()
