"""Every LazyConfig under configs/ loads and instantiates; the table rows say what they build."""
import glob
import os

import numpy as np
import pytest
import torch
from detectron2.config import LazyConfig, instantiate
from detectron2.data import transforms as T
from detectron2.structures import BitMasks, Boxes, Instances
from detectron2.utils.events import EventStorage

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_DIR = os.path.join(REPO_ROOT, "configs")
ALL_CONFIGS = sorted(
    os.path.relpath(p, CONFIG_DIR) for p in glob.glob(os.path.join(CONFIG_DIR, "**", "*.py"), recursive=True)
)
TRAINABLE = [c for c in ALL_CONFIGS if not c.startswith("common" + os.sep)]
COCO_1X_ITERS, COCO_3X_ITERS = 12 * 7393, 36 * 7393  # ceil(118287 / 16) = 7393 iters / epoch


def _load(rel):
    return LazyConfig.load(os.path.join(CONFIG_DIR, rel))


# Parameter count of each COCO config's row in the paper / release tables (millions) and the
# tolerance of our build against it. Plain ViT rows: ViTDet's SimpleFeaturePyramid instead of
# the release's ViTBaseline neck (within 6%). DINOv2 rows: the release's table gives the DeiT
# rows' rounded counts; its 592 px pos-embed adds (37^2 - 14^2) * D parameters (0.45M / 0.90M / 0.81M).
PAPER_PARAMS = {
    "COCO/mask_rcnn_vit_adapter_t_1x.py": (28.1, 0.01),
    "COCO/mask_rcnn_vit_adapter_t_3x_ms.py": (28.1, 0.01),
    "COCO/mask_rcnn_vit_adapter_s_1x.py": (47.8, 0.01),
    "COCO/mask_rcnn_vit_adapter_s_3x_ms.py": (47.8, 0.01),
    "COCO/mask_rcnn_vit_adapter_b_1x.py": (120.2, 0.01),
    "COCO/mask_rcnn_vit_adapter_b_3x_ms.py": (120.2, 0.01),
    "COCO/mask_rcnn_vit_adapter_l_1x.py": (347.9, 0.01),
    "COCO/mask_rcnn_vit_adapter_l_3x_ms.py": (347.9, 0.01),
    "COCO/mask_rcnn_dinov2_adapter_s_3x_ms.py": (48.0, 0.01),
    "COCO/mask_rcnn_dinov2_adapter_b_3x_ms.py": (120.0, 0.01),
    "COCO/mask_rcnn_dinov2_adapter_l_3x_ms.py": (348.0, 0.01),
    "COCO/cascade_mask_rcnn_vit_adapter_s_3x_ms.py": (86.0, 0.01),
    "COCO/cascade_mask_rcnn_vit_adapter_b_3x_ms.py": (158.0, 0.01),
    # BEiT-Adapter-L: no release row (its BEiT-L detector is HTC++); our counts, derived from the
    # ViT-Adapter-L rows in tests/modeling/test_beit_param_counts.py.
    "COCO/mask_rcnn_beit_adapter_l_3x_ms.py": (348.33, 0.001),
    "COCO/cascade_mask_rcnn_beit_adapter_l_3x_ms.py": (386.17, 0.001),
    "COCO/mask_rcnn_vit_t_3x_ms.py": (26.0, 0.06),
    "COCO/mask_rcnn_vit_s_3x_ms.py": (42.0, 0.06),
    "COCO/mask_rcnn_vit_b_3x_ms.py": (114.0, 0.06),
}
# Layer-wise lr decay (rate, ViT depth) of the COCO configs that use it (the release's values).
LAYER_DECAY = {
    "COCO/mask_rcnn_vit_adapter_l_1x.py": (0.8, 24),
    "COCO/mask_rcnn_vit_adapter_l_3x_ms.py": (0.8, 24),
    "COCO/mask_rcnn_beit_adapter_l_3x_ms.py": (0.9, 24),  # the release's HTC++ BEiT-L configs
    "COCO/cascade_mask_rcnn_beit_adapter_l_3x_ms.py": (0.9, 24),
    "COCO/mask_rcnn_dinov2_adapter_s_3x_ms.py": (0.70, 12),
    "COCO/mask_rcnn_dinov2_adapter_b_3x_ms.py": (0.60, 12),
    "COCO/mask_rcnn_dinov2_adapter_l_3x_ms.py": (0.65, 24),
}


def test_config_inventory():
    expected = {
        f"COCO/mask_rcnn_vit_adapter_{s}_{sched}.py" for s in "tsbl" for sched in ("1x", "3x_ms")
    } | {f"COCO/cascade_mask_rcnn_vit_adapter_{s}_3x_ms.py" for s in "sb"} | {
        f"COCO/mask_rcnn_vit_{s}_3x_ms.py" for s in "tsb"
    } | {f"COCO/mask_rcnn_dinov2_adapter_{s}_3x_ms.py" for s in "sbl"} | {"demo/mask_rcnn_vit_adapter_demo.py"}
    assert expected <= {c.replace(os.sep, "/") for c in TRAINABLE}
    assert set(PAPER_PARAMS) == {c.replace(os.sep, "/") for c in TRAINABLE if c.startswith("COCO" + os.sep)}


@pytest.mark.parametrize("rel", ALL_CONFIGS)
def test_loads(rel):
    cfg = _load(rel)
    assert len(cfg) > 0
    if rel in TRAINABLE:  # only the standard LazyConfig keys: any LazyConfig trainer runs it
        assert set(cfg) == {"model", "dataloader", "optimizer", "lr_multiplier", "train"}


@pytest.mark.parametrize("rel", [c for c in TRAINABLE if c.startswith("COCO" + os.sep)])
def test_coco_config_instantiates(rel):
    cfg = _load(rel)
    with torch.device("meta"):  # no memory, no init cost: structure and sizes only
        model = instantiate(cfg.model)
    n = sum(p.numel() for p in model.parameters()) / 1e6
    paper, tol = PAPER_PARAMS[rel.replace(os.sep, "/")]
    assert abs(n - paper) <= tol * paper, f"{n:.2f}M vs paper {paper}M (tolerance {tol:.0%})"
    assert model.roi_heads.num_classes == 80
    assert cfg.train.max_iter == (COCO_1X_ITERS if "_1x" in rel else COCO_3X_ITERS)
    assert cfg.train.init_checkpoint.startswith("checkpoints/")
    assert cfg.optimizer.lr == 1e-4 and cfg.optimizer.weight_decay == 0.05
    assert cfg.dataloader.train.total_batch_size == 16
    assert cfg.model.input_format == cfg.dataloader.train.mapper.image_format == "RGB"
    for aug in cfg.dataloader.train.mapper.augmentations:
        instantiate(aug)
    cfg.optimizer.params.model = model
    groups = instantiate(cfg.optimizer.params)
    scales = sorted({g["lr_scale"] for g in groups})
    decay = LAYER_DECAY.get(rel.replace(os.sep, "/"))
    if decay is not None:  # embeddings rate^(n+1), block i rate^(n-i), the rest 1
        rate, depth = decay
        assert (cfg.optimizer.params.layer_decay_rate, cfg.optimizer.params.num_layers) == (rate, depth)
        assert scales == pytest.approx(sorted(rate**k for k in range(depth + 2)))
    else:
        assert scales == [1.0]
    if "dinov2" in rel:  # DINOv2's 518 / 14 grid
        assert model.backbone.bottom_up.pretrain_grid == (37, 37)


@pytest.mark.parametrize("name, iters, steps", [("1x", COCO_1X_ITERS, (8, 11)), ("3x", COCO_3X_ITERS, (27, 33))])
def test_schedules(name, iters, steps):
    cfg = _load(os.path.join("common", "schedules.py"))
    sched = instantiate(cfg[f"lr_multiplier_{name}"])
    at = lambda it: sched(it / iters)  # noqa: E731  (detectron2 calls it with iter / max_iter)
    assert at(0) == pytest.approx(0.001)
    assert at(250) == pytest.approx(0.001 + 0.999 * 0.5, rel=1e-3)  # linear warm-up over 500 iters
    assert at(500) == pytest.approx(1.0)
    assert at(steps[0] * 7393 - 1) == pytest.approx(1.0)
    assert at(steps[0] * 7393 + 1) == pytest.approx(0.1)
    assert at(steps[1] * 7393 + 1) == pytest.approx(0.01)
    assert at(iters - 1) == pytest.approx(0.01)


def test_multiscale_pipeline_matches_official():
    cfg = _load(os.path.join("COCO", "mask_rcnn_vit_adapter_s_3x_ms.py"))
    augs = T.AugmentationList([instantiate(a) for a in cfg.dataloader.train.mapper.augmentations])
    assert cfg.dataloader.train.mapper.recompute_boxes
    np.random.seed(0)
    shorts = set()
    for _ in range(60):
        aug_input = T.AugInput(np.zeros((480, 640, 3), dtype=np.uint8))
        augs(aug_input)
        h, w = aug_input.image.shape[:2]
        assert h <= 1024 and w <= 1024  # final 1024 crop
        shorts.add(min(h, w))
    # the resize-only policy gives short edges in {480, ..., 800} (step 32), capped by the
    # 1024 crop; the crop policy gives other aspect ratios: both policies occur
    assert shorts & set(range(480, 801, 32))
    assert len(shorts) > 5


def _image_and_gt(h, w):
    inst = Instances((h, w))
    boxes = torch.tensor([[10.0, 20.0, 90.0, 100.0], [100.0, 40.0, 180.0, 150.0]])
    inst.gt_boxes = Boxes(boxes)
    inst.gt_classes = torch.tensor([0, 2])
    masks = torch.zeros(2, h, w, dtype=torch.bool)
    for i, (x0, y0, x1, y1) in enumerate(boxes.int().tolist()):
        masks[i, y0:y1, x0:x1] = True
    inst.gt_masks = BitMasks(masks)
    image = torch.randint(0, 255, (3, h, w), dtype=torch.uint8).float()
    return {"image": image, "instances": inst, "height": h, "width": w}


def test_vit_adapter_t_forward():
    cfg = _load(os.path.join("COCO", "mask_rcnn_vit_adapter_t_1x.py"))
    model = instantiate(cfg.model).eval()
    assert model.backbone.bottom_up.embed_dim == 192 and len(model.backbone.bottom_up.blocks) == 12
    with torch.no_grad():
        out = model([{"image": torch.randint(0, 255, (3, 200, 300)).float(), "height": 200, "width": 300}])
    inst = out[0]["instances"]
    assert inst.image_size == (200, 300)
    assert inst.pred_masks.shape[1:] == (200, 300)


def test_demo_config_train_step():
    cfg = _load(os.path.join("demo", "mask_rcnn_vit_adapter_demo.py"))
    model = instantiate(cfg.model).train()
    with EventStorage(0):
        losses = model([_image_and_gt(192, 192), _image_and_gt(192, 192)])
    assert set(losses) == {"loss_cls", "loss_box_reg", "loss_mask", "loss_rpn_cls", "loss_rpn_loc"}
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    grads = [p.grad for p in model.backbone.bottom_up.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_demo_config_registers_its_data_and_uses_the_project_pipeline():
    from detectron2.data import DatasetCatalog, MetadataCatalog

    from vit_adapter.data import DEMO_DATASETS
    from vit_adapter.data.resumable_loader import ResumableTrainLoader
    from vit_adapter.data.robust_mapper import RobustDatasetMapper

    for name in DEMO_DATASETS.values():
        if name in DatasetCatalog.list():
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)
    cfg = _load(os.path.join("demo", "mask_rcnn_vit_adapter_demo.py"))
    assert cfg.dataloader.train.dataset.names == DEMO_DATASETS["train"]
    assert cfg.dataloader.test.dataset.names == DEMO_DATASETS["val"]
    assert set(DEMO_DATASETS.values()) <= set(DatasetCatalog.list())  # registered by loading the file
    assert cfg.dataloader.train._target_ is ResumableTrainLoader
    assert cfg.dataloader.train.mapper._target_ is RobustDatasetMapper
    assert cfg.dataloader.test.mapper._target_ is RobustDatasetMapper
    assert (cfg.dataloader.train.total_batch_size, cfg.train.max_iter, cfg.optimizer.lr) == (2, 1200, 2e-4)
    resize = cfg.dataloader.train.mapper.augmentations[0]
    assert (resize.short_edge_length, resize.max_size) == (192, 384)


def test_multiscale_mapper_crops_polygons(tmp_path):
    """The 3x+MS train mapper on a real image with polygon masks (crop needs shapely)."""
    from PIL import Image

    from detectron2.structures import BoxMode

    cfg = _load(os.path.join("COCO", "mask_rcnn_vit_adapter_s_3x_ms.py"))
    mapper = instantiate(cfg.dataloader.train.mapper)
    path = str(tmp_path / "img.jpg")
    Image.fromarray(np.full((480, 640, 3), 128, dtype=np.uint8)).save(path)
    square = [100.0, 100.0, 300.0, 100.0, 300.0, 300.0, 100.0, 300.0]
    record = {
        "file_name": path,
        "height": 480,
        "width": 640,
        "image_id": 1,
        "annotations": [
            {"bbox": [100, 100, 200, 200], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 0,
             "segmentation": [square], "iscrowd": 0}
        ],
    }
    np.random.seed(1)
    kept = 0
    for _ in range(20):
        out = mapper(dict(record))
        h, w = out["image"].shape[1:]
        inst = out["instances"]
        assert len(inst) == len(inst.gt_masks)
        if len(inst):
            kept += 1
            box = inst.gt_boxes.tensor[0]
            assert 0 <= box[0] < box[2] <= w and 0 <= box[1] < box[3] <= h
    assert kept > 0
