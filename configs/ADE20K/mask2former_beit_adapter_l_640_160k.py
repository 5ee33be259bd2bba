"""Mask2Former, BEiT-Adapter-L (BEiT-L ImageNet-22k init), ADE20K, crop 640, 160k iterations.

Release row (segmentation/README.md): Mask2Former ViT-Adapter-L, BEiT-L, 160k, 640:
mIoU 58.3 (ss) / 59.0 (ms), 568M params (568.2M counted here).
Release config: segmentation/configs/ade20k/mask2former_beit_adapter_large_640_160k_ade20k_ss.py

    python train_net.py --config-file configs/ADE20K/mask2former_beit_adapter_l_640_160k.py --num-gpus 8

| part | setting |
| --- | --- |
| model | configs/common/models/mask2former_beit_adapter.py (BEiT-Adapter-L 640, 100 queries, slide 640 / 426) |
| schedule | 160k iters, 16 images / iter (8 GPUs x 2), poly (power 1, min lr 0) after 1,500 linear warm-up iters from 1e-6 |
| optimizer | AdamW lr 2e-5, betas (0.9, 0.999), weight decay 0.05, layer decay 0.9 over 24 blocks |
| data | ADE20K: ratio-range resize of (2560, 640), crop 640 (category-area 0.75), flip, photometric distortion; test short side 640 |
| checkpoints | every 1,000 iters, keep 1; evaluation every 16k iters |

Multi-scale + flip test (the release's "ms" column):
    model.test_scales="[0.5,0.75,1.0,1.25,1.5,1.75]" model.test_flip=True

Weight decay: the release's constructor exempts 1-D parameters only (its
name list misses the `backbone.` prefix); ours also exempts pos / level
embeddings and the cls token (configs/common/optim.py).

train.init_checkpoint (a path you fill):
    https://conversationhub.blob.core.windows.net/beit-share-public/beit/beit_large_patch16_224_pt22k_ft22k.pth
A release checkpoint converts with tools/convert_official_checkpoint.py --config (this file).
"""
from detectron2.config import LazyCall as L
from detectron2.solver import WarmupParamScheduler
from fvcore.common.param_scheduler import PolynomialDecayParamScheduler

from vit_adapter.compat import get_model_zoo_config

from ..common.data_sem_seg import sem_seg_data
from ..common.models.mask2former_beit_adapter import model
from ..common.optim import AdamW as optimizer

CROP = 640
dataloader = sem_seg_data("ade20k_sem_seg_train", "ade20k_sem_seg_val", 150, CROP, (4 * CROP, CROP), (4 * CROP, CROP))

MAX_ITER = 160000
optimizer.lr = 2e-5
optimizer.weight_decay = 0.05
optimizer.params.layer_decay_rate = 0.9
optimizer.params.num_layers = 24
lr_multiplier = L(WarmupParamScheduler)(
    scheduler=L(PolynomialDecayParamScheduler)(base_value=1.0, power=1.0),
    warmup_length=1500 / MAX_ITER,
    warmup_method="linear",
    warmup_factor=1e-6,
)

train = get_model_zoo_config("common/train.py").train
train.max_iter = MAX_ITER
train.init_checkpoint = "checkpoints/beit_large_patch16_224_pt22k_ft22k.pth"
train.output_dir = "output/mask2former_beit_adapter_l_640_160k"
train.checkpointer = dict(period=1000, max_to_keep=1)
train.eval_period = 16000
train.amp.enabled = False  # the release trains in fp32 here; train.amp.enabled=True for AMP on CUDA
