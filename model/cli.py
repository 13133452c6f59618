"""The model's half of the ``csd-sr`` command: ``train``, ``evaluate``, ``quantize``, ``export``.

``csd_sr.cli`` joins these with the service's ``serve`` and ``upscale``; this module imports nothing
from ``service`` (tests/model/test_independence.py), so ``python -m model.cli train ...`` (e.g. under
``torchrun``) needs only the training dependencies.
"""

from __future__ import annotations

import argparse
import json
import sys
import typing
from pathlib import Path

from pydantic import BaseModel

from model.degradations import EVAL_DEGRADATIONS
from model.rungs import PRECISIONS
from model.train import SHARED_DATA, TrainConfig

TRAIN_DATA = SHARED_DATA / "train"
TRAIN_SETS = ("T91", "BSD200", "Wiki49", "BSDS500test")

WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"
DEFAULT_WEIGHTS = WEIGHTS_DIR / "csd-edsr-x4.safetensors"


def shipped_weights(scale: int | None) -> Path:
    """The shipped clean model of ``scale`` (x4 when ``None``)."""
    return WEIGHTS_DIR / f"csd-edsr-x{scale or 4}.safetensors"


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One ``--flag`` per TrainConfig field; lists are comma-separated, ``none`` unsets."""
    for name, field in TrainConfig.model_fields.items():
        if isinstance(field.default, BaseModel):  # nested tables (distill) are set in the TOML file
            continue
        flag = "--" + name.replace("_", "-")
        if field.annotation is bool or bool in typing.get_args(field.annotation):  # bf16's "auto" is the default
            parser.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=None)
            continue
        origin = typing.get_origin(field.annotation)
        is_seq = origin in (list, tuple) or any(
            typing.get_origin(a) in (list, tuple) for a in typing.get_args(field.annotation)
        )
        parser.add_argument(
            flag, dest=name, default=None, type=_split if is_seq else _scalar, help=f"default: {field.default}"
        )


def _split(text: str) -> list[str]:
    return [] if text in ("", "none") else text.split(",")


def _scalar(text: str) -> str | None:
    return None if text == "none" else text


def _train(args: argparse.Namespace) -> None:
    from model.distill_train import train

    overrides = {k: v for k, v in vars(args).items() if k in TrainConfig.model_fields and v is not None}
    cfg = TrainConfig.from_toml(args.config, **overrides)
    train(cfg)


def _evaluate(args: argparse.Namespace) -> None:
    import os

    import torch

    from model.evaluate import evaluate_sets, openvino_forwards, to_markdown, torch_forwards
    from model.report import write_report
    from model.weights import load_weights

    threads = args.threads or len(os.sched_getaffinity(0))
    torch.set_num_threads(threads)
    weights = args.weights or shipped_weights(args.scale)
    model, _ = load_weights(weights)
    if args.scale is not None and model.cfg.scale < args.scale:
        raise SystemExit(f"{weights} is a x{model.cfg.scale} model: it cannot serve x{args.scale}")
    if args.backend == "openvino":
        forwards = openvino_forwards(model, weights, threads, tuple(args.precisions))
    else:
        forwards = torch_forwards(model)
    results: dict[str, dict] = {}
    for degradation in args.degradation:
        run = evaluate_sets(model, args.data, forwards, args.self_ensemble, not args.no_timing, degradation, args.scale)
        for name, res in run.items():
            res |= {"backend": args.backend, "threads": threads}
            results[name if degradation == "clean" else f"{name}/{degradation}"] = res
    markdown = to_markdown(results)
    print(markdown)
    if args.out:
        write_report(args.out, results, markdown)
    if args.update_card:
        from model.weights import card_path, merge_metrics

        path = card_path(weights)
        card = merge_metrics(json.loads(path.read_text()), results.values(), args.self_ensemble)
        path.write_text(json.dumps(card, indent=2) + "\n")


def _quantize(args: argparse.Namespace) -> None:
    from model.quantize import Recipe, quantize
    from model.weights import load_weights

    model, _ = load_weights(args.weights)
    recipe = Recipe(
        max_drop_db=args.max_drop,
        activation_ranges=args.activation_ranges,
        calibration_patches=args.calibration_patches,
        seed=args.seed,
    )
    widths = tuple(float(w) for w in args.widths) if args.widths else model.widths
    out = quantize(model, args.weights, args.data, recipe, widths)
    print(f"wrote {out}")


def _export(args: argparse.Namespace) -> None:
    from model.train import export_checkpoint

    export_checkpoint(args.checkpoint, args.out)
    print(f"wrote {args.out}")


def _teacher_targets(args: argparse.Namespace) -> None:
    import torch

    from model.degradations import TRAINING_RECIPES
    from model.teacher import load_teacher
    from model.teacher_data import CropSpec, build_targets

    torch.set_num_threads(args.threads or torch.get_num_threads())
    spec = CropSpec(lr_size=args.lr_size, shard_size=args.shard_size, seed=args.seed)
    build_targets(
        load_teacher(), args.data, Path(args.out).expanduser(), args.shards, TRAINING_RECIPES[args.degradation], spec
    )


def _evaluate_sharp(args: argparse.Namespace) -> None:
    import torch

    from model.evaluate import openvino_forwards, torch_forwards
    from model.evaluate_sharp import evaluate_sharp, holdout_pairs, load_sets, rung_forwards, to_markdown
    from model.report import write_report
    from model.teacher import load_teacher
    from model.weights import load_weights

    if args.update_card and len(args.weights) > 1:
        raise SystemExit("--update-card takes one --weights")
    threads = args.threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    forwards = {}
    for weights in args.weights:
        model, _ = load_weights(weights)
        rungs = (
            openvino_forwards(model, weights, threads, tuple(args.precisions))
            if args.backend == "openvino"
            else torch_forwards(model)
        )
        prefix = f"{Path(weights).stem.removeprefix('csd-edsr-')} " if len(args.weights) > 1 else ""
        forwards |= rung_forwards(rungs, prefix)
    sets = load_sets(args.data, args.scale) if args.data else {}
    if args.holdout:  # crops of 320 HR px at every scale
        sets["holdout"] = holdout_pairs(args.holdout_data, args.holdout, 320 // args.scale, args.scale)
    result = evaluate_sharp(sets, forwards, load_teacher(), tuple(args.degradation), args.scale)
    markdown = to_markdown(result)
    print(markdown)
    if args.out:
        from model.train import describe_hardware

        meta = {"weights": args.weights, "backend": args.backend, "hardware": describe_hardware("cpu", threads)}
        write_report(args.out, {**meta, "results": result}, markdown, indent=1)
    if args.update_card:
        from model.weights import card_path, merge_sharp_metrics

        path = card_path(args.weights[0])
        card = merge_sharp_metrics(json.loads(path.read_text()), result, args.scale)
        path.write_text(json.dumps(card, indent=2) + "\n")


def _average(args: argparse.Namespace) -> None:
    from model.weights import average_weights

    average_weights(args.weights, args.out, args.ratios)
    print(f"wrote {args.out}")


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add ``train``, ``evaluate``, ``quantize``, ``export`` and ``average`` to a command's subcommands."""
    p = sub.add_parser("train", help="train a width-switchable EDSR with CSD")
    p.add_argument("--config", help="TOML file; flags override its values")
    _add_config_flags(p)
    p.set_defaults(func=_train)

    p = sub.add_parser("evaluate", help="PSNR/SSIM/params/MACs/ms per rung (width, precision) on HR folders")
    p.add_argument("--weights", help="default: the shipped clean model of --scale")
    p.add_argument(
        "--scale",
        type=int,
        choices=(2, 3, 4),
        help="the scale to measure at: the model's own, or a lower one through the model's output and a Lanczos "
        "downscale (how the service serves a scale with a larger model; the card keeps it under at_scale)",
    )
    p.add_argument(
        "--degradation",
        nargs="+",
        default=["clean"],
        choices=EVAL_DEGRADATIONS,
        help="LR degradations to measure under (model.degradations); each is a table and a card entry",
    )
    p.add_argument("--data", nargs="+", required=True, help="HR image folders")
    p.add_argument(
        "--backend",
        choices=("torch", "openvino"),
        default="torch",
        help="torch: the fp32 widths in PyTorch; openvino: every rung as the service builds it",
    )
    p.add_argument(
        "--precisions",
        nargs="+",
        choices=PRECISIONS,
        default=list(PRECISIONS),
        help="openvino only; bf16 where the CPU computes it natively",
    )
    p.add_argument("--self-ensemble", action="store_true", help="x8 geometric self-ensemble")
    p.add_argument("--no-timing", action="store_true")
    p.add_argument("--threads", type=int)
    p.add_argument("--out", help="write OUT.md and OUT.json")
    p.add_argument("--update-card", action="store_true", help="store the figures in the model card")
    p.set_defaults(func=_evaluate)

    p = sub.add_parser("quantize", help="int8 rungs of every width, written beside the weights (<stem>.int8/)")
    p.add_argument("--weights", default=str(DEFAULT_WEIGHTS))
    p.add_argument("--data", nargs="+", required=True, help="training HR folders (calibration + validation)")
    p.add_argument("--widths", nargs="+", help="default: every width of the model")
    p.add_argument("--max-drop", type=float, default=0.05, help="Y-PSNR dB an int8 rung may lose on validation")
    p.add_argument(
        "--activation-ranges",
        choices=["minmax", "mean_minmax", "histogram"],
        default="minmax",
        help="activation ranges: min/max over the patches (x4), or NNCF's histogram ranges (x2, x3: half the noise "
        "int8 adds to smooth, high-PSNR images; docs/models.md#scales)",
    )
    p.add_argument("--calibration-patches", type=int, default=300)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_quantize)

    p = sub.add_parser("export", help="turn a training checkpoint into shipped safetensors + model card")
    p.add_argument("--checkpoint", required=True, help="a run's last.pt")
    p.add_argument("--out", required=True, help="OUT.safetensors (card written to OUT.json)")
    p.set_defaults(func=_export)

    p = sub.add_parser(
        "teacher-targets", help="the sharp style's training data: degraded crops and the teacher's output"
    )
    p.add_argument("--out", required=True, help="cache folder (resumable: shards already there are kept)")
    p.add_argument("--data", nargs="+", default=[str(TRAIN_DATA / n / "HR") for n in TRAIN_SETS])
    p.add_argument("--shards", type=int, default=25)
    p.add_argument("--shard-size", type=int, default=40)
    p.add_argument("--lr-size", type=int, default=80, help="LR crop side (the teacher's output is 4x)")
    p.add_argument("--degradation", default="real", help="a training recipe of model.degradations")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int)
    p.set_defaults(func=_teacher_targets)

    p = sub.add_parser("evaluate-sharp", help="sharpness, PIQE, PSNR to the teacher and to the HR, per rung")
    p.add_argument("--weights", nargs="+", required=True, help="one or more .safetensors (rows side by side)")
    p.add_argument("--data", nargs="*", default=[], help="HR image folders (e.g. Set5/HR Set14/HR)")
    p.add_argument(
        "--scale",
        type=int,
        choices=(2, 3, 4),
        default=4,
        help="below 4: the x4 outputs (the teacher's too) Lanczos-downscaled, as the service serves x2 and x3; the "
        "card keeps them under at_scale",
    )
    p.add_argument("--holdout", type=int, default=0, help="also N crops of the images held out from the targets")
    p.add_argument("--holdout-data", nargs="+", default=[str(TRAIN_DATA / n / "HR") for n in TRAIN_SETS])
    p.add_argument("--degradation", nargs="+", default=["clean", "jpeg75", "camera"], choices=EVAL_DEGRADATIONS)
    p.add_argument("--backend", choices=("torch", "openvino"), default="torch")
    p.add_argument("--precisions", nargs="+", choices=PRECISIONS, default=list(PRECISIONS))
    p.add_argument("--threads", type=int)
    p.add_argument("--out", help="write OUT.md and OUT.json")
    p.add_argument("--update-card", action="store_true", help="store the figures in the (one) model's card")
    p.set_defaults(func=_evaluate_sharp)

    p = sub.add_parser(
        "average",
        help="the (weighted) mean of weights files of one architecture: two training stages, or a faithful and a "
        "sharp model (a sharpness step between them)",
    )
    p.add_argument("--weights", nargs="+", required=True, help="two or more .safetensors of the same architecture")
    p.add_argument("--ratios", nargs="+", type=float, help="one per weights file, summing to 1 (default: uniform)")
    p.add_argument("--out", required=True, help="OUT.safetensors (card written to OUT.json)")
    p.set_defaults(func=_average)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m model.cli",
        description="train, evaluate, quantize, export, average, teacher-targets, evaluate-sharp (the csd-sr "
        "command without serve/upscale)",
    )
    add_parsers(parser.add_subparsers(dest="command", required=True))
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    sys.exit(main())
