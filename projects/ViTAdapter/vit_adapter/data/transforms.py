"""Augmentations detectron2 lacks."""
import numpy as np

from detectron2.data import transforms as T

__all__ = ["RandomChoice"]


class RandomChoice(T.Augmentation):
    """Apply one of several augmentation pipelines, chosen uniformly at random.

    mmdetection's `AutoAugment(policies=[...])`, used by DETR's multi-scale
    recipe: each policy is a list of augmentations applied in order.
    """

    def __init__(self, policies):
        """
        Args:
            policies (list[list[Augmentation or Transform]]): the pipelines to
                choose from; each is wrapped in `T.AugmentationList`.
        """
        super().__init__()
        if not policies:
            raise ValueError("RandomChoice needs at least one policy")
        self.policies = [T.AugmentationList(list(p)) for p in policies]

    def __call__(self, aug_input):
        policy = self.policies[np.random.randint(len(self.policies))]
        return policy(aug_input)

    def __repr__(self):
        return "RandomChoice[{}]".format(", ".join(str(p) for p in self.policies))

    __str__ = __repr__
