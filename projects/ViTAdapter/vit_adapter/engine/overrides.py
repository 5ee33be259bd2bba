"""Strict `key=value` command-line overrides of LazyConfigs, for every entry point.

detectron2's `LazyConfig.apply_overrides` creates any key it is given, so a
typo is silently ignored: `train.max_itr=1` trains the full schedule,
`MODEL.WEIGHTS=model.pth` (the yacs habit) trains from scratch.
`apply_overrides` here accepts a key only when

- it exists in the config, or
- its parent is a `LazyCall` node and the key is an argument of the target's
  signature (a constructor argument the config leaves at its default), or
- it is prefixed with `+` (`+train.my_flag=1`, hydra's syntax for adding a
  key): the explicit opt-in for a deliberately new key.

Anything else is an `OverrideError` (one line) with the closest existing keys
(difflib) and, for yacs keys, their LazyConfig name. Values must match the
type of the value they replace (int, float, bool; a string takes any scalar).
A `--flag` among the overrides (argparse puts everything after the first
`key=value` into them) is reported as such.

`apply_overrides` then checks the arguments of every `LazyCall` node against
its target's signature (`check_lazy_calls`) before anything is instantiated,
so an argument typo in a config file is also one line instead of a TypeError
deep in `instantiate`.

    cfg = apply_overrides(LazyConfig.load(path), ["train.max_iter=10", "+train.note=x"])
"""
import difflib
import inspect
import numbers

from omegaconf import DictConfig, ListConfig, OmegaConf

__all__ = ["OverrideError", "YACS_TO_LAZY", "apply_overrides", "check_lazy_calls", "check_no_flags"]

# yacs (detectron2 CfgNode) keys users type out of habit -> their LazyConfig name.
YACS_TO_LAZY = {
    "MODEL.WEIGHTS": "train.init_checkpoint",
    "MODEL.DEVICE": "train.device",
    "MODEL.ROI_HEADS.NUM_CLASSES": "model.roi_heads.num_classes",
    "SOLVER.MAX_ITER": "train.max_iter",
    "SOLVER.BASE_LR": "optimizer.lr",
    "SOLVER.WEIGHT_DECAY": "optimizer.weight_decay",
    "SOLVER.IMS_PER_BATCH": "dataloader.train.total_batch_size",
    "SOLVER.CHECKPOINT_PERIOD": "train.checkpointer.period",
    "SOLVER.AMP.ENABLED": "train.amp.enabled",
    "TEST.EVAL_PERIOD": "train.eval_period",
    "DATASETS.TRAIN": "dataloader.train.dataset.names",
    "DATASETS.TEST": "dataloader.test.dataset.names",
    "DATALOADER.NUM_WORKERS": "dataloader.train.num_workers",
    "OUTPUT_DIR": "train.output_dir",
    "SEED": "train.seed",
}

_MISSING = object()


class OverrideError(ValueError):
    """A command-line override or a LazyCall argument does not fit the config."""


def check_no_flags(opts):
    """Raise OverrideError if an option (`--resume`) was placed among the overrides."""
    flags = [o for o in opts if o.startswith("-") and "=" not in o]
    if flags:
        raise OverrideError(
            f"option {flags[0]!r} comes after the key=value overrides, where it is read as an override "
            f"and ignored: put options first (... {flags[0]} key=value ...)"
        )


def _paths(node, prefix=""):
    """Dotted paths of every key of a config (lists are leaves)."""
    if not isinstance(node, DictConfig):
        return
    for key in node.keys():
        if key == "_target_":
            continue
        path = f"{prefix}{key}"
        yield path
        child = node._get_node(key)
        if isinstance(child, DictConfig):
            yield from _paths(child, path + ".")


def _select(cfg, key):
    try:
        return OmegaConf.select(cfg, key, default=_MISSING, throw_on_missing=False)
    except Exception:
        return _MISSING


def _target_params(node):
    """Names of the target's arguments, or None when any keyword is accepted / unknown."""
    target = node.get("_target_") if isinstance(node, DictConfig) else None
    if isinstance(target, str):
        from detectron2.utils.registry import locate

        try:
            target = locate(target)
        except Exception:
            return None
    if not callable(target):
        return None
    # A class whose __init__ passes **kwargs on (RobustDatasetMapper -> DatasetMapper)
    # accepts the arguments of the next __init__ up its MRO.
    inits = [c.__init__ for c in target.__mro__ if "__init__" in vars(c)] if inspect.isclass(target) else [target]
    names = []
    for fn in inits:
        try:
            sig = inspect.signature(fn)
        except (TypeError, ValueError):
            return None
        names += [n for n, p in sig.parameters.items() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        if not any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
            return [n for n in dict.fromkeys(names) if n != "self"]
    return None


def _target_name(node):
    target = node.get("_target_")
    return target if isinstance(target, str) else getattr(target, "__qualname__", repr(target))


def _suggest(word, candidates):
    close = difflib.get_close_matches(word, candidates, n=3, cutoff=0.6)
    return f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""


def _unknown_key_error(cfg, key):
    if key in YACS_TO_LAZY or key.upper() == key and "." in key or key in ("OUTPUT_DIR", "SEED"):
        lazy = YACS_TO_LAZY.get(key.upper())
        hint = f"its LazyConfig name is {lazy!r}" if lazy else "LazyConfig keys are lower case, e.g. train.max_iter"
        return OverrideError(f"unknown config key {key!r}: this is a yacs key; {hint}")
    parent, _, leaf = key.rpartition(".")
    node = _select(cfg, parent) if parent else cfg
    if isinstance(node, DictConfig) and "_target_" in node:
        params = _target_params(node) or []
        candidates = sorted(set(params) | {k for k in node.keys() if k != "_target_"})
        return OverrideError(
            f"unknown config key {key!r}: {_target_name(node)} has no argument {leaf!r}{_suggest(leaf, candidates)}"
        )
    return OverrideError(
        f"unknown config key {key!r}{_suggest(key, list(_paths(cfg)))}; "
        "prefix the override with '+' to add a new key deliberately"
    )


def _is_known(cfg, key):
    if _select(cfg, key) is not _MISSING:
        return True
    parent, _, leaf = key.rpartition(".")
    node = _select(cfg, parent) if parent else cfg
    if isinstance(node, DictConfig) and "_target_" in node:
        params = _target_params(node)
        return params is None or leaf in params
    return False


def _checked_value(key, current, value):
    """`value` converted to the type of `current`, or OverrideError."""
    if current is None or current is _MISSING or isinstance(current, ListConfig):
        return value

    def wrong(expected):
        return OverrideError(
            f"config key {key!r} expects {expected} (current value {current!r}), got {value!r}"
            + (f" ({type(value).__name__})" if value is not None else "")
        )

    if isinstance(current, DictConfig):
        if isinstance(value, dict):
            return value
        raise OverrideError(f"config key {key!r} is a config node, not a value: set its keys ({key}.<key>=...)")
    if isinstance(current, bool):
        if not isinstance(value, bool):
            raise wrong("true or false")
        return value
    if isinstance(current, numbers.Integral):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise wrong("an integer")
        return value
    if isinstance(current, numbers.Real):
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise wrong("a number")
        return float(value)
    if isinstance(current, str) and isinstance(value, (numbers.Real, bool)):
        return str(value).lower() if isinstance(value, bool) else str(value)
    return value


def apply_overrides(cfg, overrides, allow_new_keys=False):
    """Apply hydra-syntax `key=value` overrides to `cfg` in place, strictly.

    Args:
        cfg: a LazyConfig (omegaconf DictConfig).
        overrides (list[str]): `key=value` strings; `+key=value` adds a new key.
        allow_new_keys (bool): accept unknown keys without the `+` prefix.

    Returns:
        cfg

    Raises:
        OverrideError: one line: a flag among the overrides, a malformed
            override, an unknown key (with did-you-mean / yacs hint), a value
            of the wrong type, a `LazyCall` argument its target does not take
            (`check_lazy_calls`, over the whole config).
    """
    overrides = list(overrides or [])
    check_no_flags(overrides)
    for o in overrides:
        if "=" not in o:
            raise OverrideError(f"override {o!r} is not key=value")
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception as e:
        raise OverrideError(f"cannot parse overrides: {str(e).strip().splitlines()[0]}") from None
    for o in parsed:
        key, value = o.key_or_group, o.value()
        if o.is_delete():
            raise OverrideError(f"deleting keys (~{key}) is not supported")
        adding = o.is_add() or o.is_force_add() or allow_new_keys
        if not adding and not _is_known(cfg, key):
            raise _unknown_key_error(cfg, key)
        value = _checked_value(key, _select(cfg, key), value)
        parts = key.split(".")
        for i in range(1, len(parts)):
            v = _select(cfg, ".".join(parts[:i]))
            if v is _MISSING or v is None:
                break
            if not OmegaConf.is_config(v):
                raise OverrideError(
                    f"cannot set {key!r}: {'.'.join(parts[:i])!r} is a {type(v).__name__}, not a config node"
                )
        OmegaConf.update(cfg, key, value, merge=True)
    check_lazy_calls(cfg)
    return cfg


def check_lazy_calls(cfg, prefix=""):
    """Raise OverrideError if a LazyCall node of `cfg` has an argument its target does not take."""
    if isinstance(cfg, ListConfig):
        for i, item in enumerate(cfg):
            check_lazy_calls(item, f"{prefix}{i}.")
        return
    if not isinstance(cfg, DictConfig):
        return
    if "_target_" in cfg:
        params = _target_params(cfg)
        if params is not None:
            for key in cfg.keys():
                if key != "_target_" and key not in params:
                    raise OverrideError(
                        f"config key {prefix + str(key)!r}: {_target_name(cfg)} has no argument {key!r}"
                        f"{_suggest(key, params)}"
                    )
    for key in cfg.keys():
        child = cfg._get_node(key)
        if isinstance(child, (DictConfig, ListConfig)):
            check_lazy_calls(child, f"{prefix}{key}.")
