"""ResumableTrainLoader: batch i depends only on (seed, i, rank, world size)."""
import numpy as np
import pytest

from detectron2.utils import comm

from vit_adapter.data import DatasetError
from vit_adapter.data.resumable_loader import ResumableTrainLoader


def _dicts(n=10, portrait=()):
    return [
        {"file_name": f"{i}.jpg", "image_id": i, "width": 40 if i in portrait else 60, "height": 60 if i in portrait else 40}
        for i in range(n)
    ]


class RecordingMapper:
    """Returns the index and a random number (stands for a random augmentation)."""

    def __init__(self, bad=()):
        self.bad = set(bad)

    def __call__(self, d):
        if d["image_id"] in self.bad:
            return None
        return (d["image_id"], float(np.random.rand()))


def take(loader, n):
    it = iter(loader)
    return [next(it) for _ in range(n)]


def test_resumed_stream_equals_uninterrupted_stream():
    full = take(ResumableTrainLoader(_dicts(), RecordingMapper(), 4, seed=5), 8)
    resumed = ResumableTrainLoader(_dicts(), RecordingMapper(), 4, seed=5)
    resumed.set_start_iter(5)
    assert take(resumed, 3) == full[5:]
    # Sanity: the stream is shuffled, crosses epochs, and augmentations differ per sample.
    assert full[0] != full[1] and len({x for b in full for x in b}) == 32
    assert [i for i, _ in full[0]] != [0, 1, 2, 3]
    # A different seed gives a different stream.
    assert take(ResumableTrainLoader(_dicts(), RecordingMapper(), 4, seed=6), 8) != full


def test_workers_do_not_change_the_data():
    serial = take(ResumableTrainLoader(_dicts(), RecordingMapper(), 2, seed=1, aspect_ratio_grouping=False), 6)
    workers = take(
        ResumableTrainLoader(_dicts(), RecordingMapper(), 2, seed=1, aspect_ratio_grouping=False, num_workers=2), 6
    )
    assert workers == serial


def test_mapper_does_not_disturb_the_callers_rng():
    np.random.seed(0)
    expected = np.random.rand()
    np.random.seed(0)
    take(ResumableTrainLoader(_dicts(), RecordingMapper(), 2, seed=1), 2)
    assert np.random.rand() == expected


def test_aspect_ratio_grouping():
    portrait = {1, 4, 7}
    batches = take(ResumableTrainLoader(_dicts(portrait=portrait), RecordingMapper(), 3, seed=0), 12)
    for b in batches:
        assert len({i in portrait for i, _ in b}) == 1


def test_ranks_split_each_global_batch(monkeypatch):
    single = take(ResumableTrainLoader(_dicts(), RecordingMapper(), 4, seed=2, aspect_ratio_grouping=False), 3)
    monkeypatch.setattr(comm, "get_world_size", lambda: 2)
    per_rank = []
    for rank in (0, 1):
        monkeypatch.setattr(comm, "get_rank", lambda r=rank: r)
        per_rank.append(take(ResumableTrainLoader(_dicts(), RecordingMapper(), 4, seed=2, aspect_ratio_grouping=False), 3))
    for it in range(3):
        assert per_rank[0][it] + per_rank[1][it] == single[it]


def test_skipped_images_are_replaced_deterministically():
    bad = {0, 3}
    a = take(ResumableTrainLoader(_dicts(), RecordingMapper(bad), 4, seed=3), 6)
    b = ResumableTrainLoader(_dicts(), RecordingMapper(bad), 4, seed=3)
    b.set_start_iter(2)
    assert take(b, 4) == a[2:]
    assert all(len(batch) == 4 and all(i not in bad for i, _ in batch) for batch in a)


def test_unusable_dataset_stops_with_a_clear_error():
    loader = ResumableTrainLoader(_dicts(3), RecordingMapper(bad={0, 1, 2}), 2, seed=0, max_retries=5)
    with pytest.raises(DatasetError, match="6 images in a row could not be used"):
        take(loader, 1)


def test_bad_arguments():
    with pytest.raises(DatasetError, match="empty"):
        ResumableTrainLoader([], RecordingMapper(), 2, seed=0)
    with pytest.raises(ValueError, match="set_start_iter|start_iter"):
        ResumableTrainLoader(_dicts(), RecordingMapper(), 2, seed=0).set_start_iter(-1)


def test_resume_hook_restores_random_seeds_from_the_checkpoint():
    from vit_adapter.engine.trainer import DeterministicResumeHook

    np.random.seed(1)
    first = ResumableTrainLoader(_dicts(), RecordingMapper(), 2)  # seed=None: a random shared seed
    hook = DeterministicResumeHook(first, seed=-1)
    state = hook.state_dict()
    assert state == {"seed": first.seed, "data_seed": first.seed}

    np.random.seed(2)  # the resumed process draws other random seeds ...
    second = ResumableTrainLoader(_dicts(), RecordingMapper(), 2)
    resumed_hook = DeterministicResumeHook(second, seed=-1)
    assert second.seed != first.seed
    resumed_hook.load_state_dict(state)  # ... until the checkpoint is loaded
    assert resumed_hook.seed == hook.seed and second.seed == first.seed
    assert take(second, 3) == take(first, 3)


def test_resume_hook_with_an_explicit_seed_keeps_the_loaders_own_seed():
    from vit_adapter.engine.trainer import DeterministicResumeHook

    loader = ResumableTrainLoader(_dicts(), RecordingMapper(), 2, seed=11)
    hook = DeterministicResumeHook(loader, seed=7)
    assert hook.state_dict() == {"seed": 7, "data_seed": 11}
