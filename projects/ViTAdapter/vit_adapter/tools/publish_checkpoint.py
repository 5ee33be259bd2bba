#!/usr/bin/env python
"""Publish a training checkpoint: weights only, .pth + .safetensors, sha256, model-zoo row.

    python tools/publish_checkpoint.py output/model_final.pth published/mask_rcnn_vit_adapter_s_demo.pth \\
        --name mask_rcnn_vit_adapter_s_demo --config configs/demo/mask_rcnn_vit_adapter_demo.py \\
        --box-ap 31.2 --mask-ap 30.5 --url https://example.org/mask_rcnn_vit_adapter_s_demo.pth

Writes DST (``{"model": state_dict}``, nothing else: optimizer, scheduler,
iteration and hook states are stripped) and DST with the suffix
``.safetensors``, each with a ``<file>.sha256`` file (``sha256sum`` format,
checked by every load of that file when it lies next to it), then prints both sha256 digests, the MODEL_ZOO.md table row
and a JSON entry for ``$VIT_ADAPTER_MODEL_ZOO``. Both files load with
``torch.load(weights_only=True)`` / safetensors, i.e. without running code.
"""
import argparse
import json
import os
import sys


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("src", help="checkpoint written by train_net.py (e.g. output/model_final.pth)")
    p.add_argument("dst", help="output .pth (the .safetensors file is written next to it)")
    p.add_argument("--name", help="model-zoo name (default: DST's file name without suffix)")
    p.add_argument("--config", default="", help="config file the weights belong to (repo-relative)")
    p.add_argument("--url", help="where the .pth will be downloadable (default: DST's path)")
    p.add_argument("--box-ap", type=float)
    p.add_argument("--mask-ap", type=float)
    p.add_argument("--notes", default="")
    p.add_argument("--allow-unsafe-pickle", action="store_true", help="trusted SRC files only")
    return p.parse_args(argv)


def publish(src, dst, *, allow_unsafe_pickle=False):
    """Strip `src` to weights, write `dst` (.pth) and its .safetensors twin.

    Returns (pth path, safetensors path, sha256 of the .pth, sha256 of the .safetensors).
    """
    import torch
    from safetensors.torch import save_file

    from vit_adapter.checkpoint.checkpointer import atomic_torch_save, atomic_write_text, check_weights, load_checkpoint_file
    from vit_adapter.checkpoint.model_zoo import sha256sum

    if not dst.endswith(".pth"):
        raise ValueError(f"DST must end with .pth, got {dst}")
    raw = load_checkpoint_file(src, allow_unsafe_pickle=allow_unsafe_pickle)
    state = raw.get("model", raw) if isinstance(raw, dict) else raw
    check_weights(state, src, "'model'")
    if not state:
        raise ValueError(f"{src}: no model state dict found (expected a dict with 'model')")
    weights = {k: torch.as_tensor(v).detach().cpu().contiguous() for k, v in state.items()}
    os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
    atomic_torch_save({"model": weights}, dst)
    st = dst[: -len(".pth")] + ".safetensors"
    save_file(weights, st, metadata={"format": "detectron2", "source": os.path.basename(src)})
    digests = []
    for path in (dst, st):
        digests.append(sha256sum(path))
        atomic_write_text(path + ".sha256", f"{digests[-1]}  {os.path.basename(path)}\n")
    return dst, st, digests[0], digests[1]


def main(argv=None):
    args = parse_args(argv)
    from vit_adapter.checkpoint.model_zoo import ModelZooEntry, entry_as_dict

    try:
        pth, st, sha_pth, sha_st = publish(args.src, args.dst, allow_unsafe_pickle=args.allow_unsafe_pickle)
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        sys.exit(f"publish_checkpoint.py: error: {e}")
    name = args.name or os.path.splitext(os.path.basename(pth))[0]
    entry = ModelZooEntry(
        name=name,
        config=args.config,
        url=args.url or os.path.abspath(pth),
        sha256=sha_pth,
        box_ap=args.box_ap,
        mask_ap=args.mask_ap,
        source="ours",
        notes=args.notes,
    )
    print(f"wrote {pth}\n  sha256 {sha_pth} (also in {pth}.sha256)")
    print(f"wrote {st}\n  sha256 {sha_st} (also in {st}.sha256)")
    print("\nMODEL_ZOO.md row:")
    print(entry.table_row())
    print("\nmodel-zoo entry (a JSON list of these in $VIT_ADAPTER_MODEL_ZOO, or vit_adapter.checkpoint.model_zoo.register):")
    print(json.dumps(entry_as_dict(entry), indent=2))


if __name__ == "__main__":
    main()
