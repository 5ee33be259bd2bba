"""A small ViT-Adapter Mask R-CNN that trains on the demo shapes dataset on a CPU.

`make demo` (tools/run_demo.py) trains this from scratch on the generated
dataset (vit_adapter.data.generate_demo_dataset: 3 classes of shapes on
textured backgrounds), evaluates it with COCOEvaluator and draws the val
predictions. Everything is the detector of configs/common/models/
mask_rcnn_vit_adapter.py (spatial prior module, 4 injector/extractor
interactions, FPN, RPN, box and mask heads) made small enough for a 2-core
CPU; the differences from ViT-Adapter-T:

- ViT: 6 blocks of width 192 (T: 12), all global attention (the 16x16 token
  grid of a 256 px image is barely larger than one 14x14 window), no drop
  path, pos-embed grid of 256 px (no pretraining, no resize);
- interactions over blocks [0,1], [2,3], [4], [5];
- spatial prior stem 32 channels (T: 64), FPN / heads 128 channels, mask head
  2 convs, 128 sampled RoIs per image: the detector heads dominate CPU time
  at this image size;
- plain BatchNorm (one process), 3 classes.

Schedule: AdamW (the paper's optimizer and weight-decay rules) at lr 2e-4,
batch 4; measured numbers are in README.md ("Demo").
"""
import detectron2.data.transforms as T
from detectron2.config import LazyCall as L
from detectron2.data import (
    DatasetMapper,
    build_detection_test_loader,
    build_detection_train_loader,
    get_detection_dataset_dicts,
)
from detectron2.evaluation import COCOEvaluator
from detectron2.layers import ShapeSpec
from fvcore.common.param_scheduler import MultiStepParamScheduler
from omegaconf import OmegaConf
from detectron2.solver import WarmupParamScheduler

from ..common.models.mask_rcnn_vit_adapter import model
from ..common.optim import AdamW as optimizer

# --- model -----------------------------------------------------------------------------
model.backbone.bottom_up.update(
    pretrain_size=192,
    embed_dim=192,
    depth=6,
    num_heads=3,
    deform_num_heads=6,
    deform_ratio=1.0,
    drop_path_rate=0.0,
    window_block_indexes=[],
    interaction_indexes=[[0, 1], [2, 3], [4, 4], [5, 5]],
    conv_inplane=32,
    norm="BN",
)
model.backbone.out_channels = 128
model.proposal_generator.head.in_channels = 128
model.proposal_generator.pre_nms_topk = (1000, 500)
model.proposal_generator.post_nms_topk = (500, 100)
model.roi_heads.num_classes = 3
model.roi_heads.batch_size_per_image = 128
model.roi_heads.box_head.input_shape = ShapeSpec(channels=128, height=7, width=7)
model.roi_heads.box_head.fc_dims = [512, 512]
model.roi_heads.box_predictor.input_shape = ShapeSpec(channels=512)
model.roi_heads.mask_head.input_shape = ShapeSpec(channels=128, width=14, height=14)
model.roi_heads.mask_head.conv_dims = [128, 128, 128]

# --- data: the generated dataset (256 x 256 images) ----------------------------------
dataloader = OmegaConf.create()
dataloader.train = L(build_detection_train_loader)(
    dataset=L(get_detection_dataset_dicts)(names="vit_adapter_demo_train"),
    mapper=L(DatasetMapper)(
        is_train=True,
        augmentations=[
            L(T.ResizeShortestEdge)(short_edge_length=192, max_size=384),
            L(T.RandomFlip)(horizontal=True),
        ],
        image_format="RGB",
        use_instance_mask=True,
    ),
    total_batch_size=4,
    num_workers=1,
)
dataloader.test = L(build_detection_test_loader)(
    dataset=L(get_detection_dataset_dicts)(names="vit_adapter_demo_val", filter_empty=False),
    mapper=L(DatasetMapper)(
        is_train=False,
        augmentations=[L(T.ResizeShortestEdge)(short_edge_length=192, max_size=384)],
        image_format="RGB",
    ),
    num_workers=1,
)
dataloader.evaluator = L(COCOEvaluator)(dataset_name="${..test.dataset.names}")

# --- schedule ---------------------------------------------------------------------------
optimizer.lr = 2e-4
MAX_ITER = 1000
lr_multiplier = L(WarmupParamScheduler)(
    scheduler=L(MultiStepParamScheduler)(
        values=[1.0, 0.1], milestones=[int(MAX_ITER * 0.85)], num_updates=MAX_ITER
    ),
    warmup_length=50 / MAX_ITER,
    warmup_method="linear",
    warmup_factor=0.001,
)
train = dict(
    output_dir="output/demo",
    init_checkpoint="",  # trained from scratch: no download
    max_iter=MAX_ITER,
    amp=dict(enabled=False),
    ddp=dict(broadcast_buffers=False, find_unused_parameters=False, fp16_compression=False),
    checkpointer=dict(period=MAX_ITER, max_to_keep=2),
    eval_period=0,
    log_period=20,
    device="cpu",
    seed=0,
)
