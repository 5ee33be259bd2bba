"""A tiny ViT-Adapter + Mask2Former that trains on the demo segmentation dataset on a CPU.

`make demo-seg HEAD=mask2former` (tools/run_demo_seg.py --config-file this file)
trains it from scratch on the generated shapes dataset
(vit_adapter.data.demo_seg_dataset: background / circle / square / triangle,
255 on outlines), evaluates mIoU with detectron2's SemSegEvaluator and draws
val overlays. Same backbone, data and recipe as
configs/demo/upernet_vit_adapter_demo_seg.py; the head is
configs/common/models/mask2former_beit_adapter.py's Mask2Former made small:

| part | demo | release L |
| --- | --- | --- |
| backbone | ViT-Adapter, 6 blocks of width 192, 128 px | BEiT-Adapter-L, 640 / 896 px |
| pixel decoder | 3 MSDeformAttn layers, width 64, 4 heads, FFN 256, GN(16) | 6 layers, 1024, 32 heads, FFN 4096, GN(32) |
| decoder | 6 masked-attention layers, 16 queries, width 64, 4 heads, FFN 256 | 9 layers, 100 / 200 queries, 1024, 32 heads, FFN 4096 |
| points | 2,048 (a 128 px image has 1,024 mask pixels at 1/4) | 12,544 |
| losses, matching, inference | as released (class 2 / mask 5 / dice 5, no-object 0.1, importance sampling 3 / 0.75) | same |

Schedule: AdamW lr 3e-4, weight decay 0.05, batch 4, poly after 50 warm-up
iterations; see MAX_ITER.
"""
from detectron2.config import LazyCall as L
from detectron2.solver import WarmupParamScheduler
from fvcore.common.param_scheduler import PolynomialDecayParamScheduler

from vit_adapter.modeling.mask2former import (
    HungarianMatcher,
    Mask2FormerHead,
    MaskedAttentionDecoder,
    MSDeformAttnPixelDecoder,
    SetCriterion,
)

from .upernet_vit_adapter_demo_seg import dataloader, model, optimizer

NUM_CLASSES = 4
NUM_POINTS = 2048
DIM = 64

model.sem_seg_head = L(Mask2FormerHead)(
    in_features=["res2", "res3", "res4", "res5"],
    pixel_decoder=L(MSDeformAttnPixelDecoder)(
        in_channels=[192] * 4, conv_dim=DIM, mask_dim=DIM, num_layers=3, num_heads=4, num_points=4, ffn_dim=256,
        num_groups=16,
    ),
    predictor=L(MaskedAttentionDecoder)(
        in_channels=DIM, num_classes=NUM_CLASSES, hidden_dim=DIM, mask_dim=DIM, num_queries=16, num_heads=4,
        ffn_dim=256, num_layers=6,
    ),
    criterion=L(SetCriterion)(
        num_classes=NUM_CLASSES,
        matcher=L(HungarianMatcher)(cost_class=2.0, cost_mask=5.0, cost_dice=5.0, num_points=NUM_POINTS),
        class_weight=2.0, mask_weight=5.0, dice_weight=5.0, no_object_weight=0.1,
        num_points=NUM_POINTS, oversample_ratio=3.0, importance_sample_ratio=0.75,
    ),
    num_classes=NUM_CLASSES,
    ignore_value=255,
)

optimizer.lr = 3e-4
optimizer.weight_decay = 0.05
MAX_ITER = 2000  # 2000 iters * 4 images = 20 epochs of the 400 training images
lr_multiplier = L(WarmupParamScheduler)(
    scheduler=L(PolynomialDecayParamScheduler)(base_value=1.0, power=1.0),
    warmup_length=50 / MAX_ITER,
    warmup_method="linear",
    warmup_factor=0.001,
)
train = dict(
    output_dir="output/demo_seg_mask2former",
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
