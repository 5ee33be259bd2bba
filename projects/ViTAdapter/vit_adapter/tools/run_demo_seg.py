#!/usr/bin/env python
"""The segmentation demo (`make demo-seg`): train ViT-Adapter + UperNet on CPU, evaluate, draw.

    python tools/run_demo_seg.py [--config-file configs/demo/upernet_vit_adapter_demo_seg.py]
                                 [--num-vis 8] [key=value config overrides ...]

1. generates the demo segmentation dataset (deterministic; cached under
   $DETECTRON2_DATASETS/vit_adapter_demo_seg, default ./datasets),
2. trains the config with train_net.py (detectron2's trainer, hooks and
   checkpointer; log / metrics.json in train.output_dir),
3. evaluates on the val split with detectron2's SemSegEvaluator (prints mIoU),
4. draws colour overlays of the predictions on the first --num-vis val images
   into <train.output_dir>/vis/*.png (tools/predict.py's drawing),
5. prints a summary (wall time, seconds per iteration, mIoU, per-class IoU)
   and writes it to <train.output_dir>/demo_seg_summary.json.

Any semantic-segmentation config whose test dataset is registered when the
config loads runs the same way (`make demo-seg CONFIG=...`).
"""
import argparse
import json
import os
import sys
import time

from vit_adapter import REPO_ROOT

sys.path.insert(0, REPO_ROOT)  # train_net.py

DEFAULT_CONFIG = os.path.join(REPO_ROOT, "configs", "demo", "upernet_vit_adapter_demo_seg.py")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config-file", default=DEFAULT_CONFIG, metavar="FILE")
    parser.add_argument("--num-vis", type=int, default=8, help="val images to draw")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides key=value")
    args = parser.parse_args(argv)

    start, load_start = time.time(), os.getloadavg()

    import train_net
    from detectron2.config import LazyConfig
    from detectron2.data import DatasetCatalog
    from detectron2.engine import default_argument_parser
    from vit_adapter.engine.overrides import apply_overrides
    from vit_adapter.tools.predict import Predictor, predict_images, test_metadata
    from vit_adapter.tools.run_demo import seconds_per_iter

    train_args = default_argument_parser().parse_args(["--config-file", args.config_file] + args.opts)
    results = train_net.main(train_args)  # dataset, training, final evaluation (mIoU)
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

    sem_seg = results.get("sem_seg", {})
    summary = {
        "config": os.path.relpath(os.path.abspath(args.config_file), REPO_ROOT),
        "overrides": args.opts,
        "max_iter": cfg.train.max_iter,
        "wall_time_s": round(time.time() - start, 1),
        "train_and_eval_time_s": round(train_end - start, 1),
        "seconds_per_iter_median": seconds_per_iter(os.path.join(out_dir, "metrics.json")),
        "load_average_start": [round(x, 2) for x in load_start],
        "load_average_end": [round(x, 2) for x in os.getloadavg()],
        "mIoU": sem_seg.get("mIoU"),
        "pACC": sem_seg.get("pACC"),
        "IoU": {k[4:]: v for k, v in sem_seg.items() if k.startswith("IoU-")},
        "visualisations": written,
    }
    with open(os.path.join(out_dir, "demo_seg_summary.json"), "w") as f:
        json.dump(summary, f, indent=2)

    def fmt(x, spec):
        return "n/a" if x is None else format(x, spec)

    per_class = ", ".join(f"{k} {fmt(v, '.1f')}" for k, v in summary["IoU"].items())
    print(
        f"\nSegmentation demo done in {summary['wall_time_s']:.0f} s ({cfg.train.max_iter} iterations, "
        f"{fmt(summary['seconds_per_iter_median'], '.2f')} s/iter median; load average "
        f"{summary['load_average_start'][0]} -> {summary['load_average_end'][0]}).\n"
        f"mIoU {fmt(summary['mIoU'], '.1f')} on {val_name} (IoU: {per_class}).\n"
        f"Overlays: {vis_dir}/ ({len(written)} PNG files). "
        f"Summary: {os.path.join(out_dir, 'demo_seg_summary.json')}"
    )
    return summary


if __name__ == "__main__":
    from vit_adapter.engine.overrides import OverrideError
    from vit_adapter.engine.preflight import SetupError

    try:
        main()
    except (OverrideError, SetupError) as e:
        sys.exit(f"run_demo_seg.py: error: {e}")
