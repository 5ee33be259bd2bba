"""Multi-process launch: detectron2's `launch` on GPUs, a small gloo path on CPU.

detectron2 0.6's `launch` asserts CUDA in every worker and uses NCCL. On a
machine without CUDA (or with `train.device=cpu` on the command line),
`launch(..., device="cpu")` starts the processes itself with the gloo backend
and sets up detectron2's `comm` exactly as detectron2 does for GPUs (global and
per-machine process groups). Everything else is detectron2's.

Two things differ on CPU and are handled here:

- `create_ddp_model`: DDP wants `device_ids=None` for CPU modules.
- `convert_sync_batchnorm`: torch's `nn.SyncBatchNorm` runs on GPUs only
  ("SyncBatchNorm expected input tensor to be on GPU"); on CPU it becomes
  detectron2's `NaiveSyncBatchNorm` (all-reduced batch statistics, exact for
  equal per-process batch shapes; same state-dict keys).
"""
import os
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from detectron2.engine import launch as d2_launch
from detectron2.engine.defaults import create_ddp_model as d2_create_ddp_model
from detectron2.engine.launch import _find_free_port
from detectron2.layers import NaiveSyncBatchNorm
from detectron2.utils import comm

__all__ = ["launch", "infer_device", "create_ddp_model", "convert_sync_batchnorm"]

DEFAULT_TIMEOUT = timedelta(minutes=30)


def infer_device(opts=()) -> str:
    """"cpu" or "cuda": a `train.device=...` command-line override, else CUDA if available."""
    for opt in opts or ():
        if isinstance(opt, str) and opt.startswith("train.device="):
            return "cpu" if opt.split("=", 1)[1].strip("'\"").startswith("cpu") else "cuda"
    return "cuda" if torch.cuda.is_available() else "cpu"


def launch(
    main_func,
    num_processes_per_machine: int,
    num_machines: int = 1,
    machine_rank: int = 0,
    dist_url=None,
    args=(),
    timeout=DEFAULT_TIMEOUT,
    device: str = "cuda",
):
    """Run `main_func(*args)` in `num_machines * num_processes_per_machine` processes.

    Args:
        main_func, num_machines, machine_rank, dist_url, args, timeout: as detectron2's `launch`.
        num_processes_per_machine (int): GPUs (device "cuda") or CPU processes (device "cpu").
        device (str): "cuda": detectron2's launch (NCCL); "cpu": gloo processes.
    """
    world_size = num_machines * num_processes_per_machine
    if not device.startswith("cpu") or world_size == 1:
        return d2_launch(
            main_func,
            num_processes_per_machine,
            num_machines=num_machines,
            machine_rank=machine_rank,
            dist_url=dist_url,
            args=args,
            timeout=timeout,
        )
    if dist_url is None or dist_url == "auto":
        if num_machines != 1:
            raise ValueError("--dist-url must name the rank-0 machine (tcp://host:port) for multi-machine jobs")
        dist_url = f"tcp://127.0.0.1:{_find_free_port()}"
    mp.spawn(
        _cpu_worker,
        nprocs=num_processes_per_machine,
        args=(main_func, world_size, num_processes_per_machine, machine_rank, dist_url, args, timeout),
        daemon=False,
    )


def _cpu_worker(local_rank, main_func, world_size, per_machine, machine_rank, dist_url, args, timeout):
    global_rank = machine_rank * per_machine + local_rank
    dist.init_process_group(
        backend="gloo", init_method=dist_url, world_size=world_size, rank=global_rank, timeout=timeout
    )
    # The per-machine group detectron2's comm.get_local_rank() / get_local_size() use.
    assert comm._LOCAL_PROCESS_GROUP is None
    for i in range(world_size // per_machine):
        group = dist.new_group(list(range(i * per_machine, (i + 1) * per_machine)))
        if i == machine_rank:
            comm._LOCAL_PROCESS_GROUP = group
    # Share the machine's cores instead of oversubscribing them N times.
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // per_machine))
    comm.synchronize()
    main_func(*args)


def convert_sync_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every `nn.SyncBatchNorm` by detectron2's `NaiveSyncBatchNorm` (CPU-capable).

    Weights and running statistics are kept. Returns the (possibly new) module.
    """
    if isinstance(module, nn.SyncBatchNorm):
        new = NaiveSyncBatchNorm(
            module.num_features, eps=module.eps, momentum=module.momentum,
            affine=module.affine, track_running_stats=module.track_running_stats,
        )
        new.load_state_dict(module.state_dict())
        new.train(module.training)
        return new.to(module.running_mean.device if module.running_mean is not None else "cpu")
    for name, child in module.named_children():
        new_child = convert_sync_batchnorm(child)
        if new_child is not child:
            setattr(module, name, new_child)
    return module


def create_ddp_model(model, device: str = "cuda", **kwargs):
    """detectron2's `create_ddp_model`, with `device_ids=None` on CPU.

    On CPU, call `convert_sync_batchnorm(model)` first (before building the
    optimizer, which must see the new layers' parameters).
    """
    if comm.get_world_size() > 1 and device.startswith("cpu"):
        if any(isinstance(m, nn.SyncBatchNorm) for m in model.modules()):
            raise ValueError(
                "nn.SyncBatchNorm needs GPUs: call vit_adapter.engine.launch.convert_sync_batchnorm(model) "
                "before building the optimizer for CPU multi-process training"
            )
        kwargs.setdefault("device_ids", None)
    return d2_create_ddp_model(model, **kwargs)
