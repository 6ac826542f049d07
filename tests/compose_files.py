"""Read Compose files the way Docker Compose does for the parts our files use: YAML anchors and
merge keys, the ``!reset`` and ``!override`` tags, and the merge of an override file onto a base.
Used by the deploy tests, which have no Docker engine to ask (``docker compose config``).

Example::

    merged = load_compose(ROOT / "docker-compose.yml", ROOT / "docker-compose.tiny.yml")
    merged["services"]["worker-gpu"].get("deploy")   # None: the tiny override resets it
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

# Compose replaces these sequences instead of merging them (Compose Specification, "Merge").
_REPLACED_SEQUENCES = {"command", "entrypoint", "test"}


@dataclass(frozen=True)
class Reset:
    """``!reset``: the key is removed from the merged result."""


@dataclass(frozen=True)
class Override:
    """``!override value``: the value replaces the base's instead of merging with it."""

    value: Any


class _ComposeLoader(yaml.SafeLoader):
    pass


def _reset(loader: yaml.SafeLoader, node: yaml.Node) -> Reset:
    return Reset()


def _override(loader: yaml.SafeLoader, node: yaml.Node) -> Override:
    if isinstance(node, yaml.MappingNode):
        return Override(loader.construct_mapping(node, deep=True))
    if isinstance(node, yaml.SequenceNode):
        return Override(loader.construct_sequence(node, deep=True))
    return Override(loader.construct_scalar(node))


_ComposeLoader.add_constructor("!reset", _reset)
_ComposeLoader.add_constructor("!override", _override)


def read_compose_file(path: Path) -> dict[str, Any]:
    """One Compose file as written, tags kept as ``Reset``/``Override`` markers."""
    data = yaml.load(path.read_text(), Loader=_ComposeLoader)  # noqa: S506 - safe loader subclass
    if not isinstance(data, dict):
        raise ValueError(f"{path} is not a Compose mapping")
    return data


def merge(base: Any, override: Any, key: str = "") -> Any:
    """Merge ``override`` onto ``base`` with Compose's rules for the shapes our files use.

    A sequence other than command/entrypoint/healthcheck test must carry ``!override`` in the
    override file: Compose merges those by rules per field (ports append, volumes by target), and
    refusing here keeps this reader from silently disagreeing with Compose.
    """
    if isinstance(override, Override):
        return strip_tags(override.value)
    if isinstance(base, dict) and isinstance(override, dict):
        merged = dict(base)
        for k, v in override.items():
            if isinstance(v, Reset):
                merged.pop(k, None)
            elif k in merged:
                merged[k] = merge(merged[k], v, k)
            else:
                merged[k] = strip_tags(v)
        return merged
    if isinstance(base, list) and isinstance(override, list):
        if key in _REPLACED_SEQUENCES:
            return strip_tags(override)
        raise ValueError(f"sequence '{key}' in an override file needs !override or !reset to say how it merges")
    return strip_tags(override)


def strip_tags(value: Any) -> Any:
    """The value with ``Override`` markers unwrapped and ``Reset`` keys dropped (a file alone)."""
    if isinstance(value, Override):
        return strip_tags(value.value)
    if isinstance(value, dict):
        return {k: strip_tags(v) for k, v in value.items() if not isinstance(v, Reset)}
    if isinstance(value, list):
        return [strip_tags(v) for v in value if not isinstance(v, Reset)]
    return value


def load_compose(*paths: Path) -> dict[str, Any]:
    """The merged model of ``docker compose -f a -f b ...`` (before interpolation)."""
    merged: dict[str, Any] = {}
    for path in paths:
        merged = merge(merged, read_compose_file(path)) if merged else strip_tags(read_compose_file(path))
    return merged


_VARIABLE = re.compile(r"\$\{(\w+)(?::-([^}]*))?\}")


def interpolate(value: str, env: dict[str, str]) -> str:
    """``${NAME}`` and ``${NAME:-default}`` as Compose fills them from the shell and ``.env``.

    Example::

        interpolate("${PORT:-8333}", {})   # '8333'
    """
    return _VARIABLE.sub(lambda m: env.get(m.group(1)) or (m.group(2) or ""), value)
