"""A tiny ViT-Adapter Mask R-CNN on the demo dataset, for the reliability tests.

detectron2's Mask R-CNN FPN with the ViT-Adapter backbone (drop path on, the
official SyncBN norm) and the reliability data pipeline (ResumableTrainLoader +
RobustDatasetMapper, random resize + flip), sized to train an iteration in
about 0.1 s on one CPU core: ViT width 48, depth 4, 64 px images, FPN / heads
32-64 channels. AdamW, warm-up + step schedule, 10 iterations, checkpoints
every 3 (tests override both).
"""
import torch

from detectron2.config import LazyCall as L
from detectron2.data import get_detection_dataset_dicts
from detectron2.data import transforms as T
from detectron2.layers import ShapeSpec
from detectron2.solver import WarmupParamScheduler
from fvcore.common.param_scheduler import MultiStepParamScheduler

from vit_adapter.compat import get_model_zoo_config
from vit_adapter.modeling.backbone import ViTAdapter
from vit_adapter.data import register_demo_dataset
from vit_adapter.data.robust_mapper import RobustDatasetMapper
from vit_adapter.data.resumable_loader import ResumableTrainLoader

model = get_model_zoo_config("common/models/mask_rcnn_fpn.py").model
train = get_model_zoo_config("common/train.py").train
optimizer = get_model_zoo_config("common/optim.py").SGD
optimizer._target_ = torch.optim.AdamW
del optimizer.momentum

model.backbone.bottom_up = L(ViTAdapter)(
    pretrain_size=64, embed_dim=48, depth=4, num_heads=3, drop_path_rate=0.1,
    window_size=2, window_block_indexes=[0, 2], conv_inplane=16, deform_num_heads=6,
    interaction_indexes=[[0, 0], [1, 1], [2, 2], [3, 3]], norm="SyncBN",
)
model.backbone.in_features = ["res2", "res3", "res4", "res5"]
model.backbone.out_channels = 32
model.proposal_generator.head.in_channels = 32
model.proposal_generator.post_nms_topk = (64, 64)
model.roi_heads.batch_size_per_image = 32
model.roi_heads.num_classes = 3
model.roi_heads.box_head.conv_dims = []
model.roi_heads.box_head.input_shape = ShapeSpec(channels=32, height=7, width=7)
model.roi_heads.box_head.fc_dims = [64]
model.roi_heads.box_predictor.input_shape = ShapeSpec(channels=64)
model.roi_heads.mask_head.input_shape = ShapeSpec(channels=32, width=14, height=14)
model.roi_heads.mask_head.conv_dims = [16]
model.pixel_mean = [123.675, 116.28, 103.53]
model.pixel_std = [58.395, 57.12, 57.375]
model.input_format = "RGB"

# Generated on first use under $DETECTRON2_DATASETS/vit_adapter_demo.
register_demo_dataset(num_train=8, num_val=2, image_size=64)
dataloader = dict(
    train=L(ResumableTrainLoader)(
        dataset=L(get_detection_dataset_dicts)(names="vit_adapter_demo_train"),
        mapper=L(RobustDatasetMapper)(
            is_train=True,
            augmentations=[
                L(T.ResizeShortestEdge)(short_edge_length=(48, 64), max_size=96, sample_style="choice"),
                L(T.RandomFlip)(horizontal=True),
            ],
            image_format="RGB",
            use_instance_mask=True,
            num_classes="${model.roi_heads.num_classes}",
        ),
        total_batch_size=2,
        num_workers=0,
    )
)

optimizer.lr = 1e-4
optimizer.weight_decay = 0.05
lr_multiplier = L(WarmupParamScheduler)(
    scheduler=L(MultiStepParamScheduler)(values=[1.0, 0.1], milestones=[8], num_updates=10),
    warmup_length=0.25,
    warmup_factor=0.1,
)
train.update(max_iter=10, device="cpu", seed=7, log_period=1, eval_period=0)
train.checkpointer.update(period=3, max_to_keep=100)
