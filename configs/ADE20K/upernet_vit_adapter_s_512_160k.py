"""UperNet, ViT-Adapter-S (DeiT-S init), ADE20K, crop 512, 160k iterations.

Release row (segmentation/README.md): UperNet ViT-Adapter-S, DeiT-S, 512, 160k:
mIoU 46.2 (ss) / 47.1 (ms), 58M params (57.61M counted from the release's code).
Release config: segmentation/configs/ade20k/upernet_deit_adapter_small_512_160k_ade20k.py

    python train_net.py --config-file configs/ADE20K/upernet_vit_adapter_s_512_160k.py --num-gpus 8

- model: configs/common/models/upernet_vit_adapter.py (global attention in every
  block, UPerHead 512 + FCN auxiliary head 0.4, slide 512 / 341 at test);
- schedule: 160k iters at 16 images / iter (8 GPUs x 2), poly (power 1, min lr
  0) after a 1,500-iteration linear warm-up from 1e-6 (detectron2's
  WarmupParamScheduler ramps to the poly value at iteration 1,500; mmcv
  multiplies the poly value by the ramp: they differ by < 1% of the lr, during
  the warm-up only);
- AdamW lr 6e-5, betas (0.9, 0.999), weight decay 0.01 (the release's value for
  the DeiT rows; its AugReg-L row uses 0.05), layer decay 0.95 over 12 blocks,
  no decay on 1-D parameters, pos / level embeddings;
- data: configs/common/data_ade20k.py (ratio-range resize of (2048, 512),
  crop 512 with category-area 0.75, flip, photometric distortion).

Multi-scale + flip test (the release's "ms" column):
    model.test_scales="[0.5,0.75,1.0,1.25,1.5,1.75]" model.test_flip=True

train.init_checkpoint (a path you fill):
    https://dl.fbaipublicfiles.com/deit/deit_small_patch16_224-cd65a155.pth
"""
from detectron2.config import LazyCall as L
from detectron2.solver import WarmupParamScheduler
from fvcore.common.param_scheduler import PolynomialDecayParamScheduler

from vit_adapter.compat import get_model_zoo_config

from ..common.data_ade20k import dataloader
from ..common.models.upernet_vit_adapter import model
from ..common.optim import AdamW as optimizer

model.backbone.drop_path_rate = 0.2

MAX_ITER = 160000  # 160k iters * 16 images / iter = 2.56M images = 126 epochs of the 20,210 training images
optimizer.lr = 6e-5
optimizer.weight_decay = 0.01
optimizer.params.layer_decay_rate = 0.95
optimizer.params.num_layers = 12
lr_multiplier = L(WarmupParamScheduler)(
    scheduler=L(PolynomialDecayParamScheduler)(base_value=1.0, power=1.0),
    warmup_length=1500 / MAX_ITER,
    warmup_method="linear",
    warmup_factor=1e-6,
)

train = get_model_zoo_config("common/train.py").train
train.max_iter = MAX_ITER
train.init_checkpoint = "checkpoints/deit_small_patch16_224-cd65a155.pth"
train.output_dir = "output/upernet_vit_adapter_s_512_160k"
train.checkpointer = dict(period=1000, max_to_keep=1)  # the release: every 1,000 iters, keep 1
train.eval_period = 16000  # the release: every 16k iters
train.amp.enabled = False  # the release trains with fp16 loss scaling; AMP here: train.amp.enabled=True on CUDA
