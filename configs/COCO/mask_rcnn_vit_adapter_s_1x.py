"""Mask R-CNN, ViT-Adapter-S (DeiT-S init), 1x schedule, single scale.

Paper / official release (COCO val2017):  box AP 44.7, mask AP 39.9, 47.8M params.
Official config: detection/configs/mask_rcnn/mask_rcnn_deit_adapter_small_fpn_1x_coco.py

    python train_net.py --config-file configs/COCO/mask_rcnn_vit_adapter_s_1x.py --num-gpus 8

- 1x: 12 epochs at 16 images / iter = 12 * ceil(118287 / 16) = 12 * 7393 = 88716 iters,
  lr x0.1 after epochs 8 and 11, 500 linear warm-up iters (configs/common/schedules.py);
- AdamW lr 1e-4, wd 0.05, no decay on pos/level embeddings, norms, biases, gammas;
- data: short edge 800, long edge <= 1333, flip (configs/common/data_coco.py).

train.init_checkpoint: the ImageNet DeiT-S weights, a path you fill (nothing is
downloaded at run time):
    https://dl.fbaipublicfiles.com/deit/deit_small_patch16_224-cd65a155.pth
    -> checkpoints/deit_small_patch16_224-cd65a155.pth
"""
from vit_adapter.compat import get_model_zoo_config

from ..common.data_coco import dataloader
from ..common.models.mask_rcnn_vit_adapter import model
from ..common.optim import AdamW as optimizer
from ..common.schedules import iters_per_epoch, lr_multiplier_1x as lr_multiplier, max_iter_1x

model.backbone.bottom_up.drop_path_rate = 0.2

train = get_model_zoo_config("common/train.py").train
train.max_iter = max_iter_1x  # 88716
train.init_checkpoint = "checkpoints/deit_small_patch16_224-cd65a155.pth"
train.output_dir = "output/mask_rcnn_vit_adapter_s_1x"
train.checkpointer = dict(period=iters_per_epoch(), max_to_keep=3)  # every epoch, keep 3 (official)
train.eval_period = iters_per_epoch()  # every epoch (official)
train.amp.enabled = False  # the release trains in fp32; `train.amp.enabled=True` for AMP on CUDA
