"""The ``csd-sr`` command: train, evaluate, export (``model.cli``); serve, upscale (``service.cli``); upscale
through a server (``csd_sr.batch``)."""

from __future__ import annotations

import argparse
import sys

from csd_sr import batch
from model import cli as model_cli
from service import cli as service_cli


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="csd-sr", description="Train, evaluate and export the width-switchable EDSR; serve it, or upscale a file."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    model_cli.add_parsers(sub)
    service_cli.add_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.command == "upscale" and args.server:  # the service's client, above service/ like this command
        batch.main(args)
    else:
        args.func(args)


if __name__ == "__main__":
    sys.exit(main())
