"""Command-line options derived from ``shared.params.GenerationParams``: one ``--option`` per field,
its choices and help from the model, no range written here. Values the user leaves out stay unset,
so the model's defaults and validators decide, exactly as for the HTTP form.

Example::

    parser = argparse.ArgumentParser()
    add_param_options(parser)
    args = parser.parse_args(["--height-cm", "170", "--mode", "quality"])
    params = params_from_args(args)        # GenerationParams; IdentityBodyError(invalid_parameter)
"""

from __future__ import annotations

import argparse
import types
import typing
from typing import Any, Literal

from shared.params import GenerationParams, parse_params

GROUP_TITLE = "generation parameters (validated as the API validates them)"


def option_name(field: str) -> str:
    """``height_cm`` -> ``--height-cm``."""
    return "--" + field.replace("_", "-")


def add_param_options(parser: argparse.ArgumentParser) -> None:
    """Add one option per GenerationParams field to ``parser`` (default: unset)."""
    group = parser.add_argument_group(GROUP_TITLE)
    for name, info in GenerationParams.model_fields.items():
        base = _base_type(info.annotation)
        default = "" if info.default is None else f" (default: {info.default})"
        help_text = f"{info.description or ''}{default}".replace("%", "%%")
        if base is bool:
            group.add_argument(option_name(name), dest=name, action=argparse.BooleanOptionalAction,
                               default=None, help=help_text)
        else:
            # values stay strings: the model converts and checks them, so a bad value gets the same
            # invalid_parameter code and sentence as over HTTP instead of an argparse usage error
            choices = typing.get_args(base) if typing.get_origin(base) is Literal else ()
            metavar = "{" + ",".join(map(str, choices)) + "}" if choices else name.upper()
            group.add_argument(option_name(name), dest=name, default=None, metavar=metavar, help=help_text)


def params_from_args(args: argparse.Namespace) -> GenerationParams:
    """The options the user gave, validated into GenerationParams (IdentityBodyError on a bad value)."""
    given: dict[str, Any] = {name: getattr(args, name) for name in GenerationParams.model_fields
                             if getattr(args, name, None) is not None}
    return parse_params(given)


def _base_type(annotation: Any) -> Any:
    """``int | None`` -> ``int``; a Literal stays a Literal."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return args[0] if len(args) == 1 else str
    return annotation
