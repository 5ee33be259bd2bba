"""Every parameter and buffer of a module made random, for tests that compare
two computations of the same function: an initial value (zero biases, unit
norms, zero gamma) must not hide a term one of them forgets."""
import torch
from torch import nn


def randomize_(module: nn.Module, seed: int = 0, std: float = 0.2) -> nn.Module:
    """In place: every parameter ~ N(0, std); every floating buffer too,
    except running variances ~ U(0.5, 2) (they must stay positive). Integer
    buffers (``num_batches_tracked``) are left alone. Returns `module`."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64) * std)
        for name, b in module.named_buffers():
            if not b.is_floating_point():
                continue
            if name.rsplit(".", 1)[-1] == "running_var":
                b.copy_(torch.rand(b.shape, generator=g, dtype=torch.float64) * 1.5 + 0.5)
            else:
                b.copy_(torch.randn(b.shape, generator=g, dtype=torch.float64) * std)
    return module


def assert_all_random(module: nn.Module):
    """No parameter left at a constant value (an untouched init: zeros, ones)."""
    for name, p in module.named_parameters():
        assert p.numel() < 2 or p.std() > 0, f"{name} is constant"
