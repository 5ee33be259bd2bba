"""A small ViT-Adapter Mask R-CNN that trains on the demo shapes dataset on a CPU.

`make demo` (tools/run_demo.py) trains this from scratch on the generated
dataset (vit_adapter.data.generate_demo_dataset: 3 classes of shapes on
textured backgrounds), evaluates it with COCOEvaluator and draws the val
predictions. Everything is the detector of configs/common/models/
mask_rcnn_vit_adapter.py (spatial prior module, 4 injector/extractor
interactions, FPN, RPN, box and mask heads) made small enough for a 2-core
CPU; the differences from ViT-Adapter-T:

- images of 192 px (the generator's image_size; COCO: 800 px short edge);
- ViT: 6 blocks of width 192 (T: 12), all global attention (the 12x12 token
  grid of a 192 px image is smaller than one 14x14 window), no drop path,
  pos-embed grid of 192 px (no pretraining, no resize);
- interactions over blocks [0,1], [2,3], [4], [5];
- spatial prior stem 32 channels (T: 64), FPN / heads 128 channels, mask head
  2 convs, 128 sampled RoIs per image: the detector heads dominate CPU time
  at this image size;
- plain BatchNorm (one process), 3 classes.

Data: the generated dataset (vit_adapter.data.generate_demo_dataset: 400
train / 100 val images of 192 px, seed 0), registered when this file is
loaded as `vit_adapter_demo_train` / `vit_adapter_demo_val` and generated on
first use under $DETECTRON2_DATASETS/vit_adapter_demo (default ./datasets).
The pipeline is configs/common/data_coco.py's (ResumableTrainLoader,
RobustDatasetMapper, COCOEvaluator) at the demo's sizes. Only standard
LazyConfig keys, so detectron2's own trainer runs it unchanged:

    python <detectron2>/tools/lazyconfig_train_net.py --config-file configs/demo/mask_rcnn_vit_adapter_demo.py

Schedule: AdamW (the paper's optimizer and weight-decay rules) at lr 2e-4,
batch 2, 1200 iterations, 50 warm-up iterations, lr x0.1 for the last 15%.
Shorter runs (`train.max_iter=N`) keep the same shape (the scheduler works in
fractions of max_iter). `make demo` prints the wall time, seconds per
iteration and box / mask AP, and writes them to <output_dir>/demo_summary.json.
"""
import detectron2.data.transforms as T
from detectron2.config import LazyCall as L
from detectron2.layers import ShapeSpec
from detectron2.solver import WarmupParamScheduler
from fvcore.common.param_scheduler import MultiStepParamScheduler

from vit_adapter.data import register_demo_dataset

from ..common.data_coco import dataloader
from ..common.models.mask_rcnn_vit_adapter import model
from ..common.optim import AdamW as optimizer

# --- data: the generated dataset, registered now, generated on first use -----------------
_names = register_demo_dataset(num_train=400, num_val=100, image_size=192, seed=0)
dataloader.train.dataset.names = _names["train"]
dataloader.train.mapper.augmentations = [
    L(T.ResizeShortestEdge)(short_edge_length=192, max_size=384),
    L(T.RandomFlip)(horizontal=True),
]
dataloader.train.mapper.num_classes = "${model.roi_heads.num_classes}"
dataloader.train.total_batch_size = 2
dataloader.train.num_workers = 1
dataloader.test.dataset.names = _names["val"]
dataloader.test.mapper.augmentations = [L(T.ResizeShortestEdge)(short_edge_length=192, max_size=384)]
dataloader.test.num_workers = 1

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

# --- schedule ---------------------------------------------------------------------------
optimizer.lr = 2e-4
MAX_ITER = 1200  # 1200 iters * 2 images = 6 epochs of the 400 training images
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
