#!/usr/bin/env python
"""The demo (`make demo`): train a small ViT-Adapter Mask R-CNN on CPU, evaluate, visualise.

    python tools/run_demo.py [--config-file configs/demo/mask_rcnn_vit_adapter_demo.py]
                             [--num-vis 8] [key=value config overrides ...]

1. generates the demo shapes dataset (deterministic; cached under
   $DETECTRON2_DATASETS/vit_adapter_demo, default ./datasets),
2. trains the demo config with train_net.py (detectron2's trainer, hooks,
   checkpointer; log / metrics.json / TensorBoard events in train.output_dir),
3. evaluates on the val split with COCOEvaluator (prints the AP table),
4. draws the predictions on the first --num-vis val images with detectron2's
   Visualizer into <train.output_dir>/vis/*.png,
5. prints a summary (wall time, seconds per iteration, box / mask AP) and
   writes it to <train.output_dir>/demo_summary.json.
"""
import argparse
import json
import os
import statistics
import sys
import time

from vit_adapter import REPO_ROOT
sys.path.insert(0, REPO_ROOT)  # train_net.py

DEFAULT_CONFIG = os.path.join(REPO_ROOT, "configs", "demo", "mask_rcnn_vit_adapter_demo.py")


def seconds_per_iter(metrics_file):
    """Median of the trainer's per-iteration time (metrics.json "time"), or None."""
    times = []
    if os.path.isfile(metrics_file):
        with open(metrics_file) as f:
            for line in f:
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue
                if "time" in rec:
                    times.append(rec["time"])
    return statistics.median(times) if times else None


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config-file", default=DEFAULT_CONFIG, metavar="FILE")
    parser.add_argument("--num-vis", type=int, default=8, help="val images to visualise")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides key=value")
    args = parser.parse_args(argv)

    start, load_start = time.time(), os.getloadavg()

    import train_net
    from detectron2.config import LazyConfig
    from detectron2.data import DatasetCatalog
    from detectron2.engine import default_argument_parser
    from vit_adapter.engine.overrides import apply_overrides
    from vit_adapter.tools.predict import Predictor, predict_images, test_metadata

    train_args = default_argument_parser().parse_args(["--config-file", args.config_file] + args.opts)
    results = train_net.main(train_args)  # dataset, training, final evaluation (AP table)
    train_end = time.time()

    cfg = apply_overrides(LazyConfig.load(args.config_file), args.opts)
    cfg.train.device = "cpu" if not cfg.train.device.startswith("cuda") else cfg.train.device
    out_dir = cfg.train.output_dir
    vis_dir = os.path.join(out_dir, "vis")
    val_name = cfg.dataloader.test.dataset.names
    val_name = val_name if isinstance(val_name, str) else val_name[0]
    paths = [d["file_name"] for d in DatasetCatalog.get(val_name)[: args.num_vis]]
    predictor = Predictor(cfg, os.path.join(out_dir, "model_final.pth"))
    written = predict_images(predictor, paths, vis_dir, test_metadata(cfg))

    summary = {
        "config": os.path.relpath(args.config_file, REPO_ROOT),
        "overrides": args.opts,
        "max_iter": cfg.train.max_iter,
        "wall_time_s": round(time.time() - start, 1),
        "train_and_eval_time_s": round(train_end - start, 1),
        "seconds_per_iter_median": seconds_per_iter(os.path.join(out_dir, "metrics.json")),
        "load_average_start": [round(x, 2) for x in load_start],
        "load_average_end": [round(x, 2) for x in os.getloadavg()],
        "box_AP": results.get("bbox", {}).get("AP"),
        "mask_AP": results.get("segm", {}).get("AP"),
        "visualisations": written,
    }
    with open(os.path.join(out_dir, "demo_summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    def fmt(x, spec):
        return "n/a" if x is None else format(x, spec)

    print(
        f"\nDemo done in {summary['wall_time_s']:.0f} s ({cfg.train.max_iter} iterations, "
        f"{fmt(summary['seconds_per_iter_median'], '.2f')} s/iter median; load average "
        f"{summary['load_average_start'][0]} -> {summary['load_average_end'][0]}).\n"
        f"box AP {fmt(summary['box_AP'], '.1f')}, mask AP {fmt(summary['mask_AP'], '.1f')} on {val_name}.\n"
        f"Visualisations: {vis_dir}/ ({len(written)} PNG files). "
        f"Summary: {os.path.join(out_dir, 'demo_summary.json')}"
    )
    return summary


if __name__ == "__main__":
    from vit_adapter.engine.overrides import OverrideError
    from vit_adapter.engine.preflight import SetupError

    try:
        main()
    except (OverrideError, SetupError) as e:
        sys.exit(f"run_demo.py: error: {e}")
