"""The refusal of a base checkpoint name nobody offers: one sentence for the gateway (at submit,
against the live workers' lists) and the worker (against its model folder).

Example::

    raise unknown_base_error("juggernaut", ["sdxl-base-1.0"])   # 422 unknown_base_model
"""

from __future__ import annotations

from shared.errors import ErrorCode, IdentityBodyError


def unknown_base_error(name: str, names: list[str]) -> IdentityBodyError:
    return IdentityBodyError(
        ErrorCode.UNKNOWN_BASE_MODEL,
        f"base_model: no base checkpoint named {name!r} on this server; choose from {', '.join(names)} "
        "(GET /api/v1/info lists them under base_models).", field="base_model", choices=names)
