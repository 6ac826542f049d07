"""The ``idbody`` command. Each command group lives in its own module with a
``register(subparsers)`` function; nothing heavy is imported until a command runs.

Example::

    idbody models verify
    idbody plan --vram-gb 4
    idbody up
    idbody --version
"""

from __future__ import annotations

import argparse
import importlib
import sys

# command group -> module that registers it. Modules keep torch/diffusers imports inside functions.
COMMAND_MODULES: tuple[str, ...] = (
    "api.serve",
    "shared.access.cli",
    "worker.run_cli",
    "worker.generate_cli",
    "idbody.stack.up",
    "worker.models.cli",
    "worker.plan_cli",
)


def package_version() -> str:
    """The installed identity-body version (pyproject's), or "unknown" when run from a bare checkout."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("identity-body")
    except PackageNotFoundError:
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="idbody",
        description="identity-body: one face photo in, full-body images that keep the identity out.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
