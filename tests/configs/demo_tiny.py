"""The demo config (configs/demo/mask_rcnn_vit_adapter_demo.py) shrunk for fast tests.

Same detector, data pipeline and trainer settings as the demo; only the sizes
change: ViT width 48 and depth 4 (one block per interaction), 64 px images,
SyncBN in the adapter (the official norm: BatchNorm in one process,
synchronised across processes), batch 2, a demo split of 8 / 2 images.
"""
from detectron2.config import LazyCall as L
from detectron2.data import transforms as T

from vit_adapter.data import register_demo_dataset

from ...configs.demo.mask_rcnn_vit_adapter_demo import dataloader, lr_multiplier, model, optimizer, train

register_demo_dataset(num_train=8, num_val=2, image_size=64)  # replaces the demo's registration
model.backbone.bottom_up.update(
    pretrain_size=64, embed_dim=48, depth=4, num_heads=3, deform_num_heads=6, conv_inplane=16,
    interaction_indexes=[[0, 0], [1, 1], [2, 2], [3, 3]], window_block_indexes=[], norm="SyncBN",
)
model.roi_heads.batch_size_per_image = 32
model.proposal_generator.post_nms_topk = (64, 64)
dataloader.train.mapper.augmentations = [
    L(T.ResizeShortestEdge)(short_edge_length=(48, 64), max_size=96, sample_style="choice"),
    L(T.RandomFlip)(horizontal=True),
]
dataloader.train.total_batch_size = 2
dataloader.train.num_workers = 0
train.update(max_iter=4, log_period=1, eval_period=0, device="cpu", seed=3)
train.checkpointer.update(period=100)
