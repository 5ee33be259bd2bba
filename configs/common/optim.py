"""AdamW of the official ViT-Adapter detection configs.

lr 1e-4, weight decay 0.05, betas (0.9, 0.999); no weight decay on
pos_embed / level_embed / norms / biases / layer-scale gammas (every 1-D
parameter). ViT-Adapter-L adds layer-wise lr decay 0.8 over its 24 blocks:

    optimizer.params.layer_decay_rate = 0.8
    optimizer.params.num_layers = 24

See vit_adapter/engine/optim.py for the exact rules. `train_net.py` sets
`optimizer.params.model` to the model before instantiating.
"""
import torch

from detectron2.config import LazyCall as L

from vit_adapter.engine.optim import get_vit_adapter_param_groups

AdamW = L(torch.optim.AdamW)(
    params=L(get_vit_adapter_param_groups)(
        base_lr="${..lr}",
        weight_decay="${..weight_decay}",
        layer_decay_rate=None,
        num_layers=None,
    ),
    lr=1e-4,
    betas=(0.9, 0.999),
    weight_decay=0.05,
)
