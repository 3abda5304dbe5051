"""Entry point of the operator process (`modelroute-operator`)."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

import kopf

from . import handlers  # noqa: F401  (registers the handlers)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="modelroute-operator", description="The modelroute operator.")
    parser.add_argument(
        "-n",
        "--namespace",
        action="append",
        default=[n for n in os.environ.get("MODELROUTE_NAMESPACES", "").split(",") if n],
        help="namespace to watch (repeatable; default: all namespaces; env MODELROUTE_NAMESPACES)",
    )
    parser.add_argument("--verbose", action="store_true", help="debug logging")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Kopf configures the root logger, so our modules' lines share its format.
    kopf.configure(verbose=args.verbose)
    asyncio.run(
        kopf.operator(
            clusterwide=not args.namespace,
            namespaces=args.namespace,
            standalone=True,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
