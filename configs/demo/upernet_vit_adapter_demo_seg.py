"""A small ViT-Adapter + UperNet that trains on the demo segmentation dataset on a CPU.

`make demo-seg` (tools/run_demo_seg.py) trains this from scratch on the
generated dataset (vit_adapter.data.demo_seg_dataset: circles, squares and
triangles with their own fill patterns on smooth-noise backgrounds, labels
background / circle / square / triangle and an ignored 1-px band along outlines), evaluates it with detectron2's SemSegEvaluator
(mIoU) and draws colour overlays of val predictions. The model is
configs/common/models/upernet_vit_adapter.py (spatial prior module, 4
injector / extractor interactions, UPerHead with PPM + FCN auxiliary head)
made small for a 2-core CPU; the differences from ViT-Adapter-T + UperNet:

- images of 128 px (ADE20K: 512 crops);
- ViT: 6 blocks of width 192 (T: 12), global attention, no drop path,
  pos-embed grid of 128 px (no pretraining);
- interactions over blocks [0,1], [2,3], [4], [5]; spatial prior stem 32 channels;
- UPerHead 96 channels (512), FCN auxiliary head 48 (256), plain BatchNorm;
- test: whole image (a 128 px image is one 512 window anyway).

Data: 400 train / 100 val images (seed 0), registered when this file is
loaded as `vit_adapter_demo_seg_train` / `_val` and generated on first use under
$DETECTRON2_DATASETS/vit_adapter_demo_seg (default ./datasets). Train:
ratio-range resize 0.75-1.5, crop 128 with category-area constraint 0.75,
flip (configs/common/data_ade20k.py's pipeline at the demo's size). Only
standard LazyConfig keys, so detectron2's own trainer runs it unchanged.

Schedule: AdamW lr 3e-4, weight decay 0.01, batch 4, poly after 50 linear
warm-up iterations; see MAX_ITER.
"""
import detectron2.data.transforms as T
from detectron2.config import LazyCall as L
from detectron2.solver import WarmupParamScheduler
from fvcore.common.param_scheduler import PolynomialDecayParamScheduler

from vit_adapter.data.demo_seg_dataset import IGNORE_VALUE, SEG_CLASSES, register_demo_seg_dataset
from vit_adapter.data.sem_seg_transforms import RatioRangeResize

from ..common.data_ade20k import dataloader
from ..common.models.upernet_vit_adapter import model
from ..common.optim import AdamW as optimizer

# --- data: the generated dataset, registered now, generated on first use -----------------
_names = register_demo_seg_dataset(num_train=400, num_val=100, image_size=128, seed=0)
dataloader.train.dataset.names = _names["train"]
dataloader.train.mapper.augmentations = [
    L(RatioRangeResize)(scale=(512, 128), ratio_range=(0.75, 1.5)),
    L(T.RandomCrop_CategoryAreaConstraint)(
        crop_type="absolute", crop_size=(128, 128), single_category_max_area=0.75, ignored_category=IGNORE_VALUE
    ),
    L(T.RandomFlip)(horizontal=True),
]
dataloader.train.mapper.num_classes = len(SEG_CLASSES)
dataloader.train.mapper.ignore_value = IGNORE_VALUE
dataloader.train.total_batch_size = 4
dataloader.train.num_workers = 1
dataloader.test.dataset.names = _names["val"]
dataloader.test.mapper.augmentations = []
dataloader.test.num_workers = 1

# --- model -----------------------------------------------------------------------------
model.backbone.update(
    pretrain_size=128,
    embed_dim=192,
    depth=6,
    num_heads=3,
    deform_num_heads=6,
    deform_ratio=1.0,
    drop_path_rate=0.0,
    interaction_indexes=[[0, 1], [2, 3], [4, 4], [5, 5]],
    conv_inplane=32,
    norm="BN",
)
model.sem_seg_head.update(num_classes=len(SEG_CLASSES), channels=96, aux_channels=48, norm="BN", ignore_value=IGNORE_VALUE)
model.test_mode = "whole"

# --- schedule ---------------------------------------------------------------------------
optimizer.lr = 3e-4
optimizer.weight_decay = 0.01
MAX_ITER = 2000  # 2000 iters * 4 images = 20 epochs of the 400 training images
lr_multiplier = L(WarmupParamScheduler)(
    scheduler=L(PolynomialDecayParamScheduler)(base_value=1.0, power=1.0),
    warmup_length=50 / MAX_ITER,
    warmup_method="linear",
    warmup_factor=0.001,
)
train = dict(
    output_dir="output/demo_seg",
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
