#!/usr/bin/env python
"""Long-run memory check (not in CI): train N iterations, report RSS, fail if it grows.

Trains a config through train_net.py's own `do_train` (same trainer, hooks,
checkpointer, writers and data loader as a user's run) and samples the
resident memory of the training process plus its data-loader workers every
`--sample-every` iterations. After `--warmup` iterations (allocator caches,
first checkpoint, data-loader prefetch have settled) it fits a line to RSS over
iterations and fails if the fitted growth over the measured window exceeds
`--max-growth-mb` (default: 2% of the warm RSS, at least 20 MB).

    python tools/long_run_check.py                       # demo config, 1000 iterations
    python tools/long_run_check.py --iters 300 --warmup 100 train.checkpointer.period=100
    python tools/long_run_check.py --config-file configs/demo/mask_rcnn_vit_adapter_demo.py \
        --iters 1000 dataloader.train.num_workers=2

The demo dataset is generated under $DETECTRON2_DATASETS/vit_adapter_demo when missing.
Trailing `key=value` arguments are config overrides, as for train_net.py.
"""
import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np
import psutil

from vit_adapter import REPO_ROOT as REPO
sys.path.insert(0, REPO)

DEFAULT_CONFIG = os.path.join(REPO, "configs", "demo", "mask_rcnn_vit_adapter_demo.py")


def rss_mb(proc: psutil.Process):
    """(this process, this process + its children) resident memory in MB."""
    own = proc.memory_info().rss
    total = own
    for child in proc.children(recursive=True):
        try:
            total += child.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return own / 2**20, total / 2**20


def fit_slope(iters, values):
    """Least-squares slope (per iteration) and intercept."""
    slope, intercept = np.polyfit(np.asarray(iters, dtype=np.float64), np.asarray(values, dtype=np.float64), 1)
    return float(slope), float(intercept)


def malloc_trim():
    """Return freed heap memory to the OS (glibc), so RSS shows live memory; False if unavailable."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
        return True
    except (OSError, AttributeError):
        return False


def make_rss_hook(sample_every, samples, trim=False):
    from detectron2.engine import HookBase

    class RSSMonitor(HookBase):
        """Appends (iteration, seconds, own RSS MB, total RSS MB) every `sample_every` iterations."""

        def before_train(self):
            self._proc = psutil.Process()
            self._t0 = time.perf_counter()

        def after_step(self):
            it = self.trainer.iter
            if (it + 1) % sample_every == 0 or it == self.trainer.max_iter - 1:
                if trim:
                    malloc_trim()
                own, total = rss_mb(self._proc)
                samples.append((it + 1, time.perf_counter() - self._t0, own, total))

    return RSSMonitor()


def analyse(samples, warmup, max_growth_mb=None):
    """Fit RSS after `warmup` iterations; return a dict of the numbers and the verdict."""
    post = [s for s in samples if s[0] > warmup]
    if len(post) < 3:
        raise SystemExit(f"long_run_check: only {len(post)} samples after warm-up; run more iterations")
    its = [s[0] for s in post]
    result = {"samples_after_warmup": len(post), "window": [its[0], its[-1]]}
    for key, col in (("own", 2), ("total", 3)):
        vals = [s[col] for s in post]
        slope, _ = fit_slope(its, vals)
        result[key] = {
            "warm_mb": round(vals[0], 1),
            "final_mb": round(vals[-1], 1),
            "max_mb": round(max(vals), 1),
            "slope_mb_per_1k_iters": round(slope * 1000, 2),
            "fitted_growth_mb": round(slope * (its[-1] - its[0]), 1),
        }
    limit = max_growth_mb if max_growth_mb is not None else max(20.0, 0.02 * result["total"]["warm_mb"])
    result["limit_mb"] = round(limit, 1)
    result["ok"] = result["total"]["fitted_growth_mb"] <= limit and result["own"]["fitted_growth_mb"] <= limit
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", default=DEFAULT_CONFIG)
    parser.add_argument("--iters", type=int, default=1000, help="training iterations (default 1000)")
    parser.add_argument("--warmup", type=int, default=None, help="iterations ignored by the fit (default iters/5)")
    parser.add_argument("--sample-every", type=int, default=10)
    parser.add_argument("--max-growth-mb", type=float, default=None)
    parser.add_argument("--output-dir", default=None, help="training output (default: a temp dir)")
    parser.add_argument(
        "--malloc-trim", action="store_true",
        help="call glibc malloc_trim(0) before each sample: separates memory the allocator keeps "
        "cached (fragmentation, varying tensor shapes) from memory still referenced (a leak)",
    )
    parser.add_argument("--json", default=None, help="also write samples and results to this file")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides key=value")
    args = parser.parse_args(argv)
    warmup = args.iters // 5 if args.warmup is None else args.warmup

    from detectron2.engine import default_argument_parser
    from detectron2.engine.train_loop import TrainerBase

    import train_net
    from vit_adapter.data import default_demo_root, generate_demo_dataset
    from vit_adapter.data.demo_dataset import demo_annotation_file

    if not os.path.isfile(demo_annotation_file(default_demo_root(), "train")):
        print(f"long_run_check: generating the demo dataset under {default_demo_root()}")
        generate_demo_dataset(default_demo_root())

    output_dir = args.output_dir or tempfile.mkdtemp(prefix="long_run_check_")
    d2_args = default_argument_parser().parse_args(
        ["--config-file", args.config_file, f"train.max_iter={args.iters}", f"train.output_dir={output_dir}",
         "train.eval_period=0", *args.opts]
    )
    cfg = train_net.setup(d2_args)
    cfg.dataloader.pop("evaluator", None)  # memory of training only: no evaluation at the end

    samples = []
    orig_register = TrainerBase.register_hooks

    def register_hooks(self, hooks):  # train_net's hooks, then the monitor
        orig_register(self, list(hooks) + [make_rss_hook(args.sample_every, samples, args.malloc_trim)])

    TrainerBase.register_hooks = register_hooks
    try:
        train_net.do_train(d2_args, cfg)
    finally:
        TrainerBase.register_hooks = orig_register

    result = analyse(samples, warmup, args.max_growth_mb)
    trim = ", malloc_trim before each sample" if args.malloc_trim else ""
    print(f"\nRSS over training ({args.config_file}, {args.iters} iterations, warm-up {warmup}{trim}):")
    print(f"{'iter':>6} {'sec':>8} {'own MB':>9} {'+workers MB':>12}")
    step = max(1, len(samples) // 25)
    for it, sec, own, total in samples[::step] + ([samples[-1]] if (len(samples) - 1) % step else []):
        print(f"{it:>6} {sec:>8.1f} {own:>9.1f} {total:>12.1f}")
    for key in ("own", "total"):
        r = result[key]
        print(
            f"{key:>5}: warm {r['warm_mb']} MB -> final {r['final_mb']} MB (max {r['max_mb']}), "
            f"slope {r['slope_mb_per_1k_iters']} MB / 1000 iters, fitted growth {r['fitted_growth_mb']} MB "
            f"over iterations {result['window'][0]}-{result['window'][1]}"
        )
    verdict = "OK: no memory growth after warm-up" if result["ok"] else "FAIL: memory grows after warm-up"
    print(f"{verdict} (limit {result['limit_mb']} MB fitted growth)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"samples": samples, "result": result}, f, indent=1)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
