"""Memory of one process for the benchmark: resident set size (current, peak,
peak since a reset) and live tensor bytes (weights, gradients, optimizer state;
the peak of a training step counted from the profiler's allocation events,
the quantity ``torch.cuda.max_memory_allocated`` reports on a GPU)."""
import os
import sys
from typing import Callable

import torch

__all__ = ["current_rss_bytes", "peak_rss_bytes", "reset_peak_rss", "release_free_heap", "hwm_rss_bytes", "tensor_bytes", "resident_tensor_bytes", "peak_tensor_bytes_cpu"]


def current_rss_bytes() -> int:
    try:
        import psutil

        return psutil.Process().memory_info().rss
    except ImportError:  # Linux fallback
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss_bytes() -> int:
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # Linux: KiB


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark of this process (Linux: VmHWM via
    /proc/self/clear_refs); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def release_free_heap() -> None:
    """Give freed heap pages back to the OS (glibc malloc_trim) so that the
    RSS read next counts live memory, not what the allocator kept cached."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: RSS then includes the allocator's cache
        pass


def hwm_rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise OSError("no VmHWM in /proc/self/status")


def tensor_bytes(tensors) -> int:
    seen, total = set(), 0
    for t in tensors:
        if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() not in seen:
            seen.add(t.untyped_storage().data_ptr())
            total += t.untyped_storage().nbytes()
    return total


def resident_tensor_bytes(model, optimizer) -> int:
    """Bytes of the tensors that live across steps: weights, buffers,
    gradients and optimizer state."""
    tensors = list(model.parameters()) + list(model.buffers())
    tensors += [p.grad for p in model.parameters() if p.grad is not None]
    if optimizer is not None:
        tensors += [v for st in optimizer.state.values() for v in st.values()]
    return tensor_bytes(tensors)


def peak_tensor_bytes_cpu(step: Callable, model, optimizer) -> int:
    """Peak bytes of live CPU tensors during one `step()`: the CPU analogue of
    ``torch.cuda.max_memory_allocated``. Tensors resident at the start
    (weights, buffers, gradients, optimizer state) plus the highest running
    sum of the allocations and frees the profiler records in the step; unlike
    RSS it leaves out the interpreter and libraries and what the allocator
    keeps cached."""
    from torch.profiler import ProfilerActivity, profile

    resident = resident_tensor_bytes(model, optimizer)
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    events = prof.profiler.kineto_results.events()
    live = peak = 0
    for _, nbytes in sorted((e.start_ns(), e.nbytes()) for e in events if e.name() == "[memory]"):
        live += nbytes
        peak = max(peak, live)
    return resident + peak
