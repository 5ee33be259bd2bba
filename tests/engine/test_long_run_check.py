"""tools/long_run_check.py's verdict (the script itself trains for minutes: not in CI)."""
import numpy as np

from vit_adapter.tools.long_run_check import analyse, fit_slope


def _samples(growth_mb_per_iter, n=100, base=1000.0, noise=0.5):
    rng = np.random.default_rng(0)
    return [(i, 0.1 * i, base + growth_mb_per_iter * i + rng.normal(0, noise), 2 * base + growth_mb_per_iter * i)
            for i in range(10, 10 * n + 1, 10)]


def test_fit_slope():
    slope, intercept = fit_slope([0, 1, 2, 3], [1.0, 3.0, 5.0, 7.0])
    assert abs(slope - 2) < 1e-9 and abs(intercept - 1) < 1e-9


def test_flat_memory_passes_and_growth_fails():
    flat = analyse(_samples(0.0), warmup=200)
    assert flat["ok"] and abs(flat["own"]["slope_mb_per_1k_iters"]) < 1
    leak = analyse(_samples(0.1), warmup=200)  # 0.1 MB / iteration = 80 MB over the window
    assert not leak["ok"]
    assert abs(leak["total"]["slope_mb_per_1k_iters"] - 100) < 1
    assert leak["window"] == [210, 1000]


def test_warmup_growth_is_ignored():
    samples = [(i, 0.0, 500.0 + (300.0 if i > 100 else 3.0 * i), 900.0) for i in range(10, 1001, 10)]
    assert analyse(samples, warmup=100)["ok"]
    assert not analyse(samples, warmup=0)["ok"]
