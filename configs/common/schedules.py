"""COCO schedules of the official configs, in detectron2 iterations.

mmdetection counts epochs; at 16 images per iteration an epoch of COCO
train2017 (118287 images) is ceil(118287 / 16) = 7393 iterations.

    1x : 12 ep = 12 * 7393 = 88716 iters, lr x0.1 at epochs 8 and 11
         (iters 59144, 81323)
    3x : 36 ep = 36 * 7393 = 266148 iters, lr x0.1 at epochs 27 and 33
         (iters 199611, 243969)

Both warm up linearly for 500 iterations from 0.001 x lr (official
`warmup_iters=500, warmup_ratio=0.001`). With another batch size, scale
`train.max_iter` and the milestones by 16 / batch (the scheduler is
expressed in fractions of max_iter, so only max_iter and the warm-up
fraction need changing: use `coco_schedule(epochs, steps, batch)`).
"""
import math

from fvcore.common.param_scheduler import MultiStepParamScheduler

from detectron2.config import LazyCall as L
from detectron2.solver import WarmupParamScheduler

COCO_TRAIN_IMAGES = 118287
BATCH_SIZE = 16
WARMUP_ITERS = 500
WARMUP_FACTOR = 0.001


def iters_per_epoch(batch_size=BATCH_SIZE, num_images=COCO_TRAIN_IMAGES):
    """Iterations of one mmdetection epoch (the last, partial batch included)."""
    return math.ceil(num_images / batch_size)


def coco_schedule(epochs, steps, batch_size=BATCH_SIZE, num_images=COCO_TRAIN_IMAGES):
    """(max_iter, lr_multiplier config) of an epoch-based step schedule.

    Args:
        epochs (int): training epochs.
        steps (list[int]): epochs after which the lr is multiplied by 0.1.
        batch_size (int): images per iteration (all GPUs together).
        num_images (int): images per epoch.
    """
    per_epoch = iters_per_epoch(batch_size, num_images)
    max_iter = epochs * per_epoch
    milestones = [s * per_epoch for s in steps]
    lr_multiplier = L(WarmupParamScheduler)(
        scheduler=L(MultiStepParamScheduler)(
            values=[0.1**i for i in range(len(steps) + 1)],
            milestones=milestones,
            num_updates=max_iter,
        ),
        warmup_length=WARMUP_ITERS / max_iter,
        warmup_method="linear",
        warmup_factor=WARMUP_FACTOR,
    )
    return max_iter, lr_multiplier


# 1x: 12 * 7393 = 88716 iters at batch 16; steps at 59144 (ep 8), 81323 (ep 11).
max_iter_1x, lr_multiplier_1x = coco_schedule(epochs=12, steps=[8, 11])
# 3x: 36 * 7393 = 266148 iters at batch 16; steps at 199611 (ep 27), 243969 (ep 33).
max_iter_3x, lr_multiplier_3x = coco_schedule(epochs=36, steps=[27, 33])
