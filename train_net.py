#!/usr/bin/env python
"""Train / evaluate ViT-Adapter detectors with detectron2's LazyConfig.

detectron2's `tools/lazyconfig_train_net.py`, plus what this project needs:
runs on CPU (`train.device=cpu`, chosen automatically without CUDA), AMP only
on CUDA, iteration-exact --resume, and one-line errors for a missing config
file or broken data. Configs register their own datasets when loaded (see
configs/demo/), so detectron2's `tools/lazyconfig_train_net.py` runs them too.

    python train_net.py --config-file configs/demo/mask_rcnn_vit_adapter_demo.py
    python train_net.py --config-file configs/COCO/mask_rcnn_vit_adapter_s_3x_ms.py \
        --num-gpus 8 train.init_checkpoint=checkpoints/deit_small_patch16_224-cd65a155.pth
    python train_net.py --config-file <cfg> --eval-only train.init_checkpoint=<model.pth>
    python train_net.py --config-file <cfg> --resume      # continue from output_dir/last_checkpoint

The config needs `model`, `dataloader.{train,test,evaluator}`, `optimizer`,
`lr_multiplier` and `train` (see configs/common/train.py of detectron2).
"""
import logging
import os
import sys

import torch

from detectron2.config import LazyConfig, instantiate
from detectron2.engine import default_argument_parser, default_setup, default_writers, hooks
from detectron2.evaluation import inference_on_dataset, print_csv_format
from detectron2.utils import comm

from vit_adapter.compat import fix_map_dataset_fallback
from vit_adapter.checkpoint.checkpointer import CheckpointError, ViTAdapterCheckpointer, load_for_inference
from vit_adapter.data import DatasetError, check_registered_coco_datasets, registered_thing_classes
from vit_adapter.engine.trainer import DeterministicResumeHook, NaNLossError, build_trainer
from vit_adapter.engine.launch import convert_sync_batchnorm, create_ddp_model, launch
from vit_adapter.engine.overrides import OverrideError, apply_overrides
from vit_adapter.engine.preflight import (
    SetupError,
    check_batch_size,
    check_device,
    check_last_checkpoint,
    check_num_classes,
    check_optimizer,
    check_output_dir,
    disk_full_message,
)

logger = logging.getLogger("detectron2")


class ConfigError(ValueError):
    """The config file given on the command line cannot be used."""


def _dataset_names(cfg, keys=("train", "test")):
    """Dataset names used by the config's train/test loaders and evaluator."""
    names = []
    for key in keys:
        names_cfg = cfg.dataloader.get(key, {}).get("dataset", {}).get("names")
        if names_cfg is not None:
            names += [names_cfg] if isinstance(names_cfg, str) else list(names_cfg)
    return names


def register_datasets(cfg):
    """Give the config's COCO datasets registered elsewhere (detectron2's builtin
    `coco_2017_*`, `register_coco_instances`) the checked loader of vit_adapter.data;
    the evaluated ones are also validated for pycocotools now, not after training."""
    check_registered_coco_datasets(_dataset_names(cfg), eval_names=_dataset_names(cfg, keys=("test",)))


def check_classes(cfg, eval_only=False):
    """`model.roi_heads.num_classes` must equal the class count of every dataset the run
    reads (training: train and test; --eval-only: test), in both directions."""
    roi_heads = cfg.model.get("roi_heads")
    if roi_heads is None or "num_classes" not in roi_heads:
        return
    names = _dataset_names(cfg, keys=("test",) if eval_only else ("train", "test"))
    check_num_classes(roi_heads.num_classes, {name: registered_thing_classes(name) for name in names})


def build_model(cfg):
    """Instantiate `cfg.model` on `cfg.train.device`, CPU multi-process ready."""
    model = instantiate(cfg.model)
    model.to(cfg.train.device)
    if comm.get_world_size() > 1 and cfg.train.device == "cpu":
        model = convert_sync_batchnorm(model)  # nn.SyncBatchNorm is GPU-only (vit_adapter.engine.launch)
    return model


def do_test(cfg, model):
    """Evaluate `model` on `cfg.dataloader.test` with `cfg.dataloader.evaluator`.

    Returns:
        dict: the evaluator's results ({"bbox": {"AP": ...}, "segm": {...}}),
        empty when the config has no evaluator.
    """
    if "evaluator" not in cfg.dataloader:
        return {}
    ret = inference_on_dataset(
        model, instantiate(cfg.dataloader.test), instantiate(cfg.dataloader.evaluator)
    )
    if comm.is_main_process():
        print_csv_format(ret)
    return ret


def do_train(args, cfg):
    """Train `cfg.model` with detectron2's trainer and default hooks.

    `cfg.train` holds: output_dir, init_checkpoint, max_iter, amp.enabled,
    ddp, checkpointer (period, max_to_keep), eval_period, log_period, device.

    Returns:
        dict: the results of the last evaluation (detectron2's EvalHook also
        evaluates once after the last iteration).
    """
    model = build_model(cfg)
    logger.info("Model:\n{}".format(model))

    cfg.optimizer.params.model = model
    try:
        optim = instantiate(cfg.optimizer)
    except ValueError as e:  # torch's own checks ("Invalid learning rate: -1")
        raise ConfigError(f"cannot build the optimizer: {e}") from None

    train_loader = instantiate(cfg.dataloader.train)

    model = create_ddp_model(model, cfg.train.device, **cfg.train.ddp)
    use_amp = cfg.train.amp.enabled and cfg.train.device.startswith("cuda")
    trainer = build_trainer(model, train_loader, optim, amp=use_amp)  # NaN loss -> error with a hint

    last_results = {}

    def evaluate():
        last_results.clear()
        last_results.update(do_test(cfg, model))
        return last_results

    checkpointer = ViTAdapterCheckpointer(model, cfg.train.output_dir, trainer=trainer)
    trainer.register_hooks(
        [
            # Iteration-exact --resume: data order and RNG depend on (seed, iteration) only.
            DeterministicResumeHook(train_loader, seed=cfg.train.get("seed", -1)),
            hooks.IterationTimer(),
            hooks.LRScheduler(scheduler=instantiate(cfg.lr_multiplier)),
            hooks.PeriodicCheckpointer(checkpointer, **cfg.train.checkpointer)
            if comm.is_main_process()
            else None,
            hooks.EvalHook(cfg.train.eval_period, evaluate),
            hooks.PeriodicWriter(
                default_writers(cfg.train.output_dir, cfg.train.max_iter),
                period=cfg.train.log_period,
            )
            if comm.is_main_process()
            else None,
        ]
    )

    checkpointer.resume_or_load(cfg.train.init_checkpoint, resume=args.resume)
    if args.resume and checkpointer.has_checkpoint():
        # The checkpoint stores the iteration that just finished: start at the next one.
        start_iter = trainer.iter + 1
    else:
        start_iter = 0
    trainer.train(start_iter, cfg.train.max_iter)
    return last_results


def load_config(args):
    """Load the config, apply the overrides, check what can be checked before any
    process starts (device, optimizer, batch size, output folder, last_checkpoint),
    pick the device (CPU without CUDA)."""
    if not os.path.isfile(args.config_file):
        raise ConfigError(f"config file not found: {args.config_file}")
    try:
        cfg = LazyConfig.load(args.config_file)
    except Exception as e:
        raise ConfigError(f"cannot load config file {args.config_file} ({type(e).__name__}: {e})") from e
    cfg = apply_overrides(cfg, args.opts)  # strict: unknown keys, wrong types, LazyCall argument typos
    missing = [k for k in ("model", "dataloader", "train") if k not in cfg]
    if not args.eval_only:
        missing += [k for k in ("optimizer", "lr_multiplier") if k not in cfg]
    if missing:
        raise ConfigError(f"config file {args.config_file} lacks {', '.join(missing)}")
    check_device(cfg.train.device)
    if cfg.train.device.startswith("cuda") and not torch.cuda.is_available():
        cfg.train.device = "cpu"
    if not args.eval_only:
        check_optimizer(cfg.optimizer)
        check_batch_size(cfg.dataloader.get("train"), world_size=args.num_gpus * args.num_machines)
    check_output_dir(cfg.train.output_dir)
    if args.resume:
        check_last_checkpoint(cfg.train.output_dir)
    return cfg


def check_data(cfg, args):
    """Register / validate the config's datasets and check their classes against the model."""
    register_datasets(cfg)
    check_classes(cfg, eval_only=args.eval_only)


def setup(args):
    """Load and check the config and data, set up logging (detectron2's default_setup)."""
    cfg = load_config(args)
    default_setup(cfg, args)
    if cfg.train.device == "cpu":
        logger.info("Running on CPU (no CUDA device available or train.device=cpu).")
    check_data(cfg, args)
    fix_map_dataset_fallback()  # detectron2 0.6's loader retries skipped images (vit_adapter.compat)
    return cfg


def _check_weights_path(path):
    """--eval-only without weights would silently evaluate a random model."""
    if not path:
        raise ConfigError("--eval-only needs weights: add train.init_checkpoint=<path to model.pth>")


def main(args):
    cfg = setup(args)
    if args.eval_only:
        _check_weights_path(cfg.train.init_checkpoint)
        model = create_ddp_model(build_model(cfg), cfg.train.device)
        load_for_inference(model, cfg.train.init_checkpoint)  # every tensor from the checkpoint
        return do_test(cfg, model)
    return do_train(args, cfg)


def _preflight(args):
    """Before worker processes start (--num-gpus / --num-machines > 1): every check of
    `setup`, here, so a bad config or dataset is one line, not N tracebacks after the
    process group times out. Returns the device the workers run on."""
    cfg = load_config(args)
    check_data(cfg, args)
    if cfg.train.device == "cpu" and args.num_gpus > 1:
        cores = os.cpu_count() or 1
        if args.num_gpus > cores:
            raise ConfigError(
                f"--num-gpus {args.num_gpus} without CUDA means {args.num_gpus} CPU processes (gloo), "
                f"but this machine has {cores} CPU cores: use --num-gpus {cores} or fewer"
            )
        logger.warning(
            f"No CUDA (or train.device=cpu): --num-gpus {args.num_gpus} starts {args.num_gpus} CPU "
            f"processes (gloo backend, {cores // args.num_gpus} threads each)"
        )
    elif cfg.train.device.startswith("cuda") and torch.cuda.device_count() < args.num_gpus:
        raise ConfigError(
            f"--num-gpus {args.num_gpus} but this machine has {torch.cuda.device_count()} CUDA device(s)"
        )
    return cfg.train.device


def invoke_main():
    args = default_argument_parser().parse_args()
    try:
        # One process: launch calls main here, whose setup runs the same checks.
        device = _preflight(args) if args.num_gpus * args.num_machines > 1 else "cpu"
        launch(
            main,
            args.num_gpus,
            num_machines=args.num_machines,
            machine_rank=args.machine_rank,
            dist_url=args.dist_url,
            args=(args,),
            device=device,  # CPU: gloo processes (vit_adapter.engine.launch)
        )
    except (ConfigError, DatasetError, NaNLossError, CheckpointError, OverrideError, SetupError) as e:
        sys.exit(f"{os.path.basename(sys.argv[0])}: error: {e}")
    except OSError as e:
        msg = disk_full_message(e, "the output folder (train.output_dir)")
        if msg is None:
            raise
        sys.exit(f"{os.path.basename(sys.argv[0])}: error: {msg}")


if __name__ == "__main__":
    invoke_main()
