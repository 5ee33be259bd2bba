"""Run train_net.py with an injected fault (used by tests/engine/test_resume.py).

    python tests/_fault_injection.py <train_net.py arguments>

VA_TEST_FAULT selects the fault:
- "kill_after_iter:N": SIGKILL this process right after iteration N (after its hooks,
  so a checkpoint due at N is complete);
- "kill_during_save:N": SIGKILL this process half-way through writing the
  checkpoint of iteration N (torch.save writes half the bytes, flushes, dies).
- "nan_loss_at_iter:N": the model returns a NaN loss from iteration N on.
- "disk_full_at_save:N": saving the checkpoint of iteration N fails as on a full disk
  (torch.save writes to /dev/full: a real OSError ENOSPC).
- "dump_weights:DIR": after training, every rank writes DIR/rank<r>.pth with its
  model state dict, the parameters without a gradient, and its norm layer types.

Faults are installed at import, so the processes that `--num-gpus N` spawns
(which import this file as `__mp_main__`) get them too.
"""
import io
import os
import signal
import sys

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _die():
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def _install(fault: str):
    kind, _, arg = fault.partition(":")
    n = int(arg) if arg.isdigit() else -1
    if kind == "kill_after_iter":
        from detectron2.engine.train_loop import TrainerBase

        orig_after_step = TrainerBase.after_step

        def after_step(self):
            orig_after_step(self)
            if self.iter == n:
                _die()

        TrainerBase.after_step = after_step
    elif kind == "kill_during_save":
        orig_save = torch.save

        def save(obj, f, *args, **kwargs):
            if isinstance(obj, dict) and obj.get("iteration") == n:
                buf = io.BytesIO()
                orig_save(obj, buf, *args, **kwargs)
                data = buf.getvalue()
                if isinstance(f, (str, os.PathLike)):
                    f = open(f, "wb")
                f.write(data[: len(data) // 2])
                f.flush()
                os.fsync(f.fileno())
                _die()
            return orig_save(obj, f, *args, **kwargs)

        torch.save = save
    elif kind == "disk_full_at_save":
        orig_save = torch.save

        def save(obj, f, *args, **kwargs):
            if isinstance(obj, dict) and obj.get("iteration") == n:
                with open("/dev/full", "wb") as full:
                    return orig_save(obj, full, *args, **kwargs)
            return orig_save(obj, f, *args, **kwargs)

        torch.save = save
    elif kind == "nan_loss_at_iter":
        from detectron2.engine.train_loop import SimpleTrainer
        from detectron2.utils.events import get_event_storage

        orig_run_step = SimpleTrainer.run_step

        def run_step(self):
            model = self.model.module if hasattr(self.model, "module") else self.model
            if not getattr(model, "_va_nan_patched", False):
                forward = model.forward

                def nan_forward(*a, **k):
                    losses = forward(*a, **k)
                    if get_event_storage().iter >= n:
                        losses = {k2: v * float("nan") for k2, v in losses.items()}
                    return losses

                model.forward = nan_forward
                model._va_nan_patched = True
            return orig_run_step(self)

        SimpleTrainer.run_step = run_step
    elif kind == "dump_weights":
        from detectron2.engine.train_loop import TrainerBase
        from detectron2.utils import comm

        orig_after_train = TrainerBase.after_train

        def after_train(self):
            orig_after_train(self)
            model = self.model.module if hasattr(self.model, "module") else self.model
            torch.save(
                {
                    "model": model.state_dict(),
                    "no_grad": [k for k, p in model.named_parameters() if p.requires_grad and p.grad is None],
                    "norm_types": sorted({type(m).__name__ for m in model.modules() if "Norm" in type(m).__name__}),
                    "world_size": comm.get_world_size(),
                },
                os.path.join(arg, f"rank{comm.get_rank()}.pth"),
            )

        TrainerBase.after_train = after_train
    elif fault:
        raise ValueError(f"unknown VA_TEST_FAULT {fault!r}")


_install(os.environ.get("VA_TEST_FAULT", ""))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

if __name__ == "__main__":
    import train_net  # a module (not runpy): spawned workers unpickle train_net.main by name

    sys.argv = [os.path.join(REPO, "train_net.py")] + sys.argv[1:]
    train_net.invoke_main()
