"""Trainer pieces for long, interruptible runs.

- `DeterministicResumeHook`: a run resumed with `--resume` continues with the
  same data and random numbers as the interrupted run would have
  (iteration-exact; see :mod:`vit_adapter.data.resumable_loader`).
- `build_trainer`: detectron2's `SimpleTrainer` / `AMPTrainer` whose NaN /
  infinite-loss `FloatingPointError` says what to try.
"""
import logging

from detectron2.engine import AMPTrainer, HookBase, SimpleTrainer
from detectron2.utils import comm
from detectron2.utils.env import seed_all_rng

from vit_adapter.data.resumable_loader import iteration_seed

__all__ = ["DeterministicResumeHook", "NaNLossError", "NAN_LOSS_HINT", "build_trainer"]

logger = logging.getLogger(__name__)

NAN_LOSS_HINT = (
    "Hint: the loss diverged. Try a lower learning rate (optimizer.lr) or a longer warm-up "
    "(lr_multiplier.warmup_length), enable gradient clipping, and check the data for broken "
    "annotations (vit_adapter.data.RobustDatasetMapper drops the usual ones); with AMP, try "
    "train.amp.enabled=False."
)


class NaNLossError(FloatingPointError):
    """detectron2's non-finite-loss FloatingPointError, with `NAN_LOSS_HINT` appended."""


class DeterministicResumeHook(HookBase):
    """Make iteration `i` of a resumed run identical to iteration `i` of an uninterrupted one.

    - before each step, seeds python / numpy / torch from `(seed, iteration,
      rank)`: dropout, drop-path and the RPN / ROI samplers do not depend on
      where the run started;
    - before training, starts a `ResumableTrainLoader` at `trainer.start_iter`
      (other loaders restart their stream: a warning says so);
    - stores its seed and the loader's in the checkpoint (`state_dict`), so
      runs with a random seed (`train.seed` < 0) resume exactly too.

    Together with the model, optimizer and LR-scheduler state that detectron2
    checkpoints, a run resumed from the checkpoint of iteration k ends with
    the same weights as the uninterrupted run (bit-identical on CPU with the
    same number of threads; CUDA kernels may add their own nondeterminism).
    """

    def __init__(self, data_loader=None, seed=None):
        """
        Args:
            data_loader: the trainer's data loader; resumable if it has `set_start_iter`.
            seed (int or None): None or negative: the loader's seed if it has
                one, else a random seed shared by all ranks.
        """
        self.data_loader = data_loader
        self._resumable = hasattr(data_loader, "set_start_iter")
        if seed is None or seed < 0:
            seed = data_loader.seed if self._resumable else comm.shared_random_seed()
        self.seed = int(seed)

    def before_train(self):
        start = self.trainer.start_iter
        if self._resumable:
            self.data_loader.set_start_iter(start)
        elif start > 0:
            logger.warning(
                f"{type(self.data_loader).__name__} restarts its sample stream on resume: iteration "
                f"{start} will not see the data of the uninterrupted run. Use "
                "vit_adapter.data.resumable_loader.ResumableTrainLoader for iteration-exact resume."
            )

    def before_step(self):
        seed_all_rng(iteration_seed(self.seed, self.trainer.iter, comm.get_rank()))

    def state_dict(self):
        state = {"seed": self.seed}
        if self._resumable:
            state["data_seed"] = self.data_loader.seed
        return state

    def load_state_dict(self, state_dict):
        self.seed = int(state_dict["seed"])
        if self._resumable and "data_seed" in state_dict:
            self.data_loader.seed = int(state_dict["data_seed"])


class _NaNHintMixin:
    def run_step(self):
        try:
            super().run_step()
        except FloatingPointError as e:
            if isinstance(e, NaNLossError):
                raise
            raise NaNLossError(f"{e}\n{NAN_LOSS_HINT}") from e


class NaNHintSimpleTrainer(_NaNHintMixin, SimpleTrainer):
    """`SimpleTrainer` raising `NaNLossError` (with a hint) on a non-finite loss."""


class NaNHintAMPTrainer(_NaNHintMixin, AMPTrainer):
    """`AMPTrainer` raising `NaNLossError` (with a hint) on a non-finite loss."""


def build_trainer(model, data_loader, optimizer, amp: bool = False):
    """detectron2's `AMPTrainer` (amp) or `SimpleTrainer`, with the NaN-loss hint."""
    cls = NaNHintAMPTrainer if amp else NaNHintSimpleTrainer
    return cls(model, data_loader, optimizer)
