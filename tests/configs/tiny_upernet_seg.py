"""The demo segmentation config (configs/demo/upernet_vit_adapter_demo_seg.py) made tiny.

Same segmentor, head, data pipeline and schedule; a 4 train / 2 val split of
64 px images registered under the demo's names (replacing the demo's
registration), a ViT of width 32 and depth 4, heads of 16 / 8 channels,
batch 2, slide inference with 32 px windows every 16 px: fast end-to-end tests
of train_net.py on a segmentation config.
"""
from vit_adapter.data.demo_seg_dataset import register_demo_seg_dataset

from ...configs.demo.upernet_vit_adapter_demo_seg import dataloader, lr_multiplier, model, optimizer, train

register_demo_seg_dataset(num_train=4, num_val=2, image_size=64)
dataloader.train.mapper.augmentations[0].scale = (256, 64)
dataloader.train.mapper.augmentations[1].crop_size = (64, 64)
dataloader.train.total_batch_size = 2
dataloader.train.num_workers = 0
dataloader.test.num_workers = 0
model.backbone.update(
    pretrain_size=64, embed_dim=32, depth=4, num_heads=2, deform_num_heads=2,
    interaction_indexes=[[0, 0], [1, 1], [2, 2], [3, 3]], conv_inplane=8,
)
model.sem_seg_head.update(channels=16, aux_channels=8)
model.update(test_mode="slide", crop_size=32, stride=16)
train.update(max_iter=4, log_period=1, eval_period=0, output_dir="output/tiny_upernet_seg")
train.checkpointer.update(period=2)
