"""The Mask2Former demo config (configs/demo/mask2former_vit_adapter_demo_seg.py)
on a tiny generated split, for end-to-end tests of train_net.py.

Same network and pipeline; the demo segmentation dataset is registered again
under the same names with 4 train / 2 val images of 64 px, and the backbone
made narrow (width 48, 4 blocks) so an iteration is fast on a shared CPU."""
from vit_adapter.data.demo_seg_dataset import register_demo_seg_dataset

from ...configs.demo.mask2former_vit_adapter_demo_seg import dataloader, lr_multiplier, model, optimizer, train

register_demo_seg_dataset(num_train=4, num_val=2, image_size=64, seed=0)
dataloader.train.mapper.augmentations[0].scale = (256, 64)
dataloader.train.mapper.augmentations[1].crop_size = (64, 64)
model.backbone.update(pretrain_size=64, embed_dim=48, depth=4, num_heads=3, deform_num_heads=6,
                      interaction_indexes=[[0, 0], [1, 1], [2, 2], [3, 3]], conv_inplane=16)
model.sem_seg_head.pixel_decoder.in_channels = [48] * 4
model.sem_seg_head.pixel_decoder.num_layers = 1
model.sem_seg_head.predictor.num_layers = 3
model.sem_seg_head.criterion.num_points = 256
model.sem_seg_head.criterion.matcher.num_points = 256
