"""A training data loader whose batch `i` depends only on `(seed, i)`: exact resume.

detectron2's `TrainingSampler` is an infinite shuffled index stream started
from a seed. A run resumed at iteration k restarts that stream at its
beginning (so it sees the images of iterations 0, 1, ... again), and its
random augmentations draw from a fresh RNG. The resumed run is valid
training, but not the run that was interrupted.

`ResumableTrainLoader` makes iteration `i`'s batch a pure function of
`(seed, i, rank, world size)`:

1. Global batches: indices of per-epoch permutations
   (`numpy.random.default_rng([seed, epoch])`), grouped by aspect ratio
   (landscape / portrait, from the dataset dicts' `width`, `height`) when
   `aspect_ratio_grouping`; the i-th global batch is the i-th one completed.
2. Rank `r` of `W` takes slots `[r * b, (r + 1) * b)` of it, `b = total / W`.
3. The mapper of slot `s` runs with python / numpy / torch RNGs seeded from
   `(seed, i, s)`, so random augmentations repeat exactly; the caller's RNG
   state is restored afterwards.
4. A mapper that returns None (an image to skip, see
   `vit_adapter.data.RobustDatasetMapper`) is retried with a replacement
   index drawn from `(seed, i, s, attempt)`; after `max_retries` a
   DatasetError stops training (the dataset is mostly unusable).

`set_start_iter(k)` makes the next iterator start at batch `k` (the index
stream up to `k` is regenerated and dropped: no image is read). The trainer
does this through `vit_adapter.engine.trainer.DeterministicResumeHook`. Data-loader
workers each build every `num_workers`-th batch; torch returns them in order,
so the number of workers does not change the data either.

Known difference from detectron2's loader: detectron2 groups by the aspect
ratio *after* augmentation; we group by the dataset dicts' sizes (needed to
know batches without reading images). They agree for resize / flip / crop
pipelines that keep the orientation (all configs of this project); for others
a batch may mix orientations, which only costs some padding.

    from vit_adapter.data.resumable_loader import ResumableTrainLoader
    dataloader.train = L(ResumableTrainLoader)(
        dataset=L(get_detection_dataset_dicts)(names="coco_2017_train"),
        mapper=L(RobustDatasetMapper)(is_train=True, augmentations=[...], image_format="RGB"),
        total_batch_size=16, num_workers=4)   # seed: train.seed, or random and checkpointed
"""
import collections
import contextlib
import random

import numpy as np
import torch
import torch.utils.data as torchdata

from detectron2.data.common import DatasetFromList
from detectron2.utils import comm

from vit_adapter.data.datasets import DatasetError

__all__ = ["ResumableTrainLoader", "iteration_seed"]


def iteration_seed(*keys: int) -> int:
    """A 32-bit seed derived from integer keys (numpy's SeedSequence hashing)."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1)[0])


@contextlib.contextmanager
def _seeded_rngs(seed: int):
    """Seed python, numpy and torch's CPU RNG; restore their previous states on exit."""
    states = random.getstate(), np.random.get_state(), torch.get_rng_state()
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    try:
        yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])


def _identity(x):
    return x


def _global_batches(num_items, batch_size, seed, groups, shuffle):
    """Infinite stream of global batches (lists of dataset indices)."""
    buckets = collections.defaultdict(list)
    epoch = 0
    while True:
        order = np.random.default_rng([seed, epoch]).permutation(num_items) if shuffle else range(num_items)
        for idx in order:
            g = 0 if groups is None else groups[idx]
            bucket = buckets[g]
            bucket.append(int(idx))
            if len(bucket) == batch_size:
                yield bucket
                buckets[g] = []
        epoch += 1


class _IterationIndexedDataset(torchdata.IterableDataset):
    """Yields this rank's batch of each iteration from `start_iter` on (see module doc)."""

    def __init__(self, loader, start_iter):
        self.loader = loader
        self.start_iter = start_iter
        self.rank = comm.get_rank()

    def _load(self, it, slot, idx):
        ld = self.loader
        for attempt in range(ld.max_retries + 1):
            with _seeded_rngs(iteration_seed(ld.seed, it, slot, attempt)):
                out = ld.mapper(ld.dataset[idx])
            if out is not None:
                return out
            rng = np.random.default_rng([ld.seed, it, slot, attempt, 1])
            candidates = ld._group_members[ld._group_of(idx)]
            idx = int(candidates[rng.integers(len(candidates))])
        raise DatasetError(
            f"{ld.max_retries + 1} images in a row could not be used (iteration {it}; the mapper "
            "returned None for each, see the warnings above): check the dataset"
        )

    def __iter__(self):
        info = torchdata.get_worker_info()
        worker, num_workers = (0, 1) if info is None else (info.id, info.num_workers)
        ld = self.loader
        b = ld.batch_size
        stream = _global_batches(len(ld.dataset), ld.total_batch_size, ld.seed, ld._groups, ld.shuffle)
        for it, global_batch in enumerate(stream):
            if it < self.start_iter or (it - self.start_iter) % num_workers != worker:
                continue
            slots = range(self.rank * b, (self.rank + 1) * b)
            yield [self._load(it, s, global_batch[s]) for s in slots]


class ResumableTrainLoader:
    """Infinite training loader with iteration-exact, resumable data order.

    Iterating yields, per iteration, a list of `total_batch_size / world_size`
    mapped dicts (as detectron2's `build_detection_train_loader`).
    """

    def __init__(
        self,
        dataset,
        mapper,
        total_batch_size: int,
        *,
        seed=None,
        aspect_ratio_grouping: bool = True,
        num_workers: int = 0,
        shuffle: bool = True,
        max_retries: int = 20,
    ):
        """
        Args:
            dataset (list[dict] or map-style dataset): detectron2 dataset dicts
                (e.g. from `get_detection_dataset_dicts`).
            mapper (callable): dataset dict -> model input dict, or None to skip.
            total_batch_size (int): images per iteration over all processes.
            seed (int or None): data-order seed; None or negative: a random
                seed shared by all ranks (`DeterministicResumeHook` stores it
                in checkpoints, so resumed runs stay exact).
            aspect_ratio_grouping (bool): batch landscape and portrait images separately.
            num_workers (int): data-loader worker processes.
            shuffle (bool): shuffle every epoch.
            max_retries (int): replacement images tried when the mapper returns None.
        """
        if len(dataset) == 0:
            raise DatasetError("the training dataset is empty")
        if isinstance(dataset, list):
            dataset = DatasetFromList(dataset, copy=False)
        world = comm.get_world_size()
        if total_batch_size <= 0 or total_batch_size % world:
            raise ValueError(
                f"total_batch_size ({total_batch_size}) must be a positive multiple of the "
                f"number of processes ({world})"
            )
        self.dataset = dataset
        self.mapper = mapper
        self.total_batch_size = total_batch_size
        self.batch_size = total_batch_size // world
        self.seed = comm.shared_random_seed() if seed is None or seed < 0 else int(seed)
        self.num_workers = num_workers
        self.shuffle = shuffle
        self.max_retries = max_retries
        self.start_iter = 0
        self._groups = None
        if aspect_ratio_grouping:
            self._groups = np.array(
                [int(d.get("width", 1) < d.get("height", 1)) for d in self._iter_dicts()], dtype=np.int8
            )
        groups = np.zeros(len(dataset), dtype=np.int8) if self._groups is None else self._groups
        self._group_members = {g: np.flatnonzero(groups == g) for g in np.unique(groups)}

    def _iter_dicts(self):
        for i in range(len(self.dataset)):
            yield self.dataset[i]

    def _group_of(self, idx):
        return 0 if self._groups is None else self._groups[idx]

    def set_start_iter(self, start_iter: int):
        """The next iterator starts with the batch of iteration `start_iter`."""
        if start_iter < 0:
            raise ValueError(f"start_iter must be >= 0, got {start_iter}")
        self.start_iter = int(start_iter)

    def __iter__(self):
        # A generator: nothing runs until the first next(), so set_start_iter() and a
        # checkpointed seed take effect even on an iterator created earlier
        # (detectron2's SimpleTrainer calls iter() in its constructor).
        dataset = _IterationIndexedDataset(self, self.start_iter)
        if self.num_workers == 0:
            yield from dataset
            return
        yield from torchdata.DataLoader(
            dataset, batch_size=None, num_workers=self.num_workers, collate_fn=_identity
        )
