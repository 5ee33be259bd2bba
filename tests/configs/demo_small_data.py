"""The demo config (configs/demo/mask_rcnn_vit_adapter_demo.py) on a tiny generated split.

Same detector, pipeline and schedule; the demo dataset is registered again
under the same names with 4 train / 2 val images of 96 px (replacing the
demo's registration), for fast end-to-end tests of train_net.py.
"""
from vit_adapter.data import register_demo_dataset

from ...configs.demo.mask_rcnn_vit_adapter_demo import dataloader, lr_multiplier, model, optimizer, train

register_demo_dataset(num_train=4, num_val=2, image_size=96)
