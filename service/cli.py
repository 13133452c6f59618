"""``csd-sr serve`` (the HTTP service) and ``csd-sr upscale`` (one local file, no server)."""

from __future__ import annotations

import argparse
import json
import sys
import time
import types
import typing
from pathlib import Path
from typing import Literal

from pydantic import SecretStr

from model.rungs import PRECISIONS, Rung
from service.settings import Settings

SUFFIX_FORMATS = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".webp": "webp"}


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add ``serve`` and ``upscale`` to the ``csd-sr`` command."""
    p = sub.add_parser("serve", help="serve the upscale API (settings from CSD_SR_* env; flags override)")
    _add_settings_flags(p)
    p.set_defaults(func=_serve)

    p = sub.add_parser(
        "upscale", help="upscale images: one file locally (IN OUT), or files and folders through a server (--server)"
    )
    p.add_argument("inputs", nargs="+", metavar="PATH", help="IN OUT (local); with --server: files or folders")
    p.add_argument("--server", help="a csd-sr service URL: each file as a job there (csd_sr.batch), results in --out")
    p.add_argument("--out", help="with --server: the results' folder; files already there are skipped")
    p.add_argument("--concurrency", type=int, default=2, help="with --server: jobs in flight at once (default: 2)")
    p.add_argument("--format", choices=["png", "jpeg", "webp"], help="with --server: output format (default: png)")
    p.add_argument("--deadline-s", type=float, help="with --server: each job's deadline (default: the server's)")
    p.add_argument("--api-key", help="with --server: the server's API key")
    p.add_argument(
        "--weights",
        help="comma-separated .safetensors files to pick the model of --scale and --noise from, as the service "
        "does (default: every shipped model)",
    )
    p.add_argument("--scale", type=float, help="scale: 2, 3 or 4 locally (default: 4); any in (1, 4] on a server")
    p.add_argument("--out-width", type=int, help="with --server: a target width instead of --scale (aspect kept)")
    p.add_argument("--out-height", type=int, help="with --server: a target height (with --out-width: fit both)")
    p.add_argument("--noise", default="auto", help="auto (from the input, as the service), none, or e.g. real")
    p.add_argument("--width", type=float, help="a width of the model's ladder (default: 1.0; server: its policy)")
    p.add_argument(
        "--precision", choices=PRECISIONS, help="int8: the rung `csd-sr quantize` made (default: fp32; server: policy)"
    )
    p.add_argument("--quality", type=int, help="JPEG/WebP quality (WebP without it is lossless)")
    p.add_argument("--backend", choices=["openvino", "torch"], help="inference runtime (default: openvino)")
    p.add_argument("--threads", type=int, help="openvino: inference threads (default: usable CPUs)")
    p.add_argument("--torch-threads", type=int, help="torch backend: threads (default: 1)")
    p.set_defaults(func=_upscale)


def _add_settings_flags(parser: argparse.ArgumentParser) -> None:
    """One ``--flag`` per ``Settings`` field (``latency_target_s``: ``--latency-target-s``), its help the field's
    description, its value checked by the field as the environment's is. Secrets stay in the environment: a
    command line is visible to every process of the machine."""
    for name, field in Settings.model_fields.items():
        union = typing.get_origin(field.annotation) in (typing.Union, types.UnionType)  # X | None
        kinds = typing.get_args(field.annotation) if union else (field.annotation,)
        if SecretStr in kinds:
            continue
        literal = next((k for k in kinds if typing.get_origin(k) is Literal), None)
        number = next((k for k in kinds if k in (int, float)), None)
        flag = "--" + name.replace("_", "-")
        choices = typing.get_args(literal) if literal is not None else None
        parser.add_argument(flag, type=number, choices=choices, help=field.description)


def _settings(args: argparse.Namespace) -> Settings:
    """Environment settings with the flags that were given on top."""
    fields = Settings.model_fields
    return Settings(**{k: v for k, v in vars(args).items() if k in fields and v is not None})


def _serve(args: argparse.Namespace) -> None:
    import uvicorn

    from service.api.app import create_app

    settings = _settings(args)
    try:
        app = create_app(settings)
    except (FileNotFoundError, ValueError) as exc:
        sys.exit(f"csd-sr serve: {exc}")
    # One process per container: the policy's view of the load is this process's queue.
    uvicorn.run(app, host=settings.host, port=settings.port, log_level=settings.log_level, access_log=False)


def _upscale(args: argparse.Namespace) -> None:
    from model.weights import load_weights
    from service.errors import ApiError
    from service.inference import images, process
    from service.inference.tiles import build_engine

    if len(args.inputs) != 2:
        sys.exit("csd-sr upscale: locally it takes IN OUT (many files: --server URL IN... --out DIR)")
    args.input, args.output = args.inputs
    if args.out_width is not None or args.out_height is not None:
        sys.exit("csd-sr upscale: --out-width / --out-height need a server (--server URL); locally use --scale")
    scale = 4 if args.scale is None else args.scale
    if scale not in (2, 3, 4):
        sys.exit("csd-sr upscale: --scale must be 2, 3 or 4 locally (a server serves any factor in (1, 4])")
    args.scale, args.width, args.precision = int(scale), args.width or 1.0, args.precision or "fp32"

    settings = _settings(args).model_copy(update={"precisions": (args.precision,)})  # build only that rung
    fmt = SUFFIX_FORMATS.get(Path(args.output).suffix.lower())
    if fmt is None:
        sys.exit(f"csd-sr upscale: output suffix must be one of {', '.join(SUFFIX_FORMATS)}")
    missing = [str(p) for p in settings.weights if not p.is_file()]
    if missing:
        sys.exit(f"csd-sr upscale: weights file not found: {', '.join(missing)}")
    start = time.perf_counter()
    try:
        probe = images.probe(Path(args.input).read_bytes(), settings.max_pixels)
        if fmt == "jpeg" and probe.has_alpha:
            sys.exit("csd-sr upscale: jpeg cannot carry the alpha channel; use .png or .webp")
        path, noise = _pick_model(settings.weights, probe, args.scale, args.noise)
        model, _ = load_weights(path)
        if args.width not in model.cfg.widths:
            sys.exit(f"csd-sr upscale: --width must be one of {list(model.cfg.widths)}")
        try:
            engine = build_engine(model, settings, path)
        except ValueError as exc:  # e.g. int8 asked for without its files
            sys.exit(f"csd-sr upscale: {exc}")
        rung = Rung(args.width, args.precision)
        if rung not in engine.rungs:
            sys.exit(f"csd-sr upscale: no {rung.key} rung; this backend runs {[r.key for r in engine.rungs]}")
        engine.backend.init_worker()
        # a larger model's output (a JPEG at x2 by x4-jpeg) is Lanczos-downscaled to the asked scale, as served
        size = None if model.cfg.scale == args.scale else (probe.width * args.scale, probe.height * args.scale)
        encoding = images.Encoding(fmt, args.quality, settings.png_compress_level)
        out = process.process(engine, probe, rung, encoding, out_size=size)
    except ApiError as exc:
        sys.exit(f"csd-sr upscale: {exc.detail}")
    Path(args.output).write_bytes(out.body)
    elapsed = time.perf_counter() - start
    print(
        f"wrote {args.output}: {probe.width}x{probe.height} -> {out.out_width}x{out.out_height}, "
        f"model {path.name}{'' if size is None else ' + lanczos'} (noise {noise}), rung {rung.key}, {elapsed:.2f} s"
    )


def _pick_model(files: tuple[Path, ...], probe, scale: int, noise: str) -> tuple[Path, str]:
    """The file of the model for ``scale`` and ``noise`` (``auto``: as the service decides, from the input),
    by the service's rule: the smallest scale >= ``scale`` serving the level (``service.catalog.registry.resolve``),
    so a JPEG at x2 goes to x4-jpeg, downscaled, when there is no x2-jpeg model."""
    from model.weights import card_path, read_config
    from service.catalog.noise import choose_for_probe
    from service.catalog.registry import ModelKey, noise_levels, resolve

    models = {}
    for path in files:
        card = json.loads(card_path(path).read_text()) if card_path(path).exists() else {}
        models[ModelKey.of(read_config(path).scale, card)] = path
    levels = noise_levels(models, scale)
    if not levels:
        sys.exit(f"csd-sr upscale: no model of x{scale} or more among {', '.join(p.name for p in files)}")
    if noise != "auto" and noise not in levels:
        sys.exit(f"csd-sr upscale: --noise must be auto or one of {sorted(levels)} at x{scale}")
    choice = choose_for_probe(noise, probe, levels)
    return models[resolve(models, scale, choice.level)], choice.header
