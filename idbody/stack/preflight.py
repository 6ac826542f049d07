"""What ``idbody up`` checks and decides before it starts anything: the gateway's port is free, a
server already answering at a default address is used only when a setting names it, and the tiny
profile's small default size.

Example::

    check_port_free("127.0.0.1", 8000)          # SystemExit naming IDBODY_API_PORT when taken
    settings = with_tiny_default_size(settings)  # default_width/height 256 unless set
"""

from __future__ import annotations

import socket

from shared.settings import ENV_PREFIX, Settings


def check_port_free(host: str, port: int) -> None:
    """Refuse to start when the gateway's port is taken: ``/readyz`` would otherwise be answered by
    whatever already listens there (another ``idbody up``, another program)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as sock:
        # as uvicorn binds: a port whose old connections linger in TIME_WAIT still counts as free
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise SystemExit(f"Port {port} on {host} is already in use ({exc.strerror}). Stop what listens "
                             f"there, or choose another port: --port N or {ENV_PREFIX}API_PORT=N.") from None


def check_configured(settings: Settings, name: str, example: str) -> None:
    """A server already answering at the default address may be anybody's: use it only when the
    setting names it on purpose."""
    if name not in settings.model_fields_set:
        variable = f"{ENV_PREFIX}{name.upper()}"
        raise SystemExit(f"Something already listens at {getattr(settings, name)}, the default {variable}. "
                         f"To use that server, set {variable} to it; to start a new one, set {variable} to "
                         f"a free port (for example {variable}={example}).")


def with_tiny_default_size(settings: Settings) -> Settings:
    """The tiny profile's images are noise: jobs that ask for no size get a small one, so a first
    job takes seconds. An explicit IDBODY_DEFAULT_WIDTH / _HEIGHT wins."""
    from shared.size_presets import TINY_DEFAULT_SIZE

    if settings.default_width is not None or settings.default_height is not None:
        return settings
    width, height = TINY_DEFAULT_SIZE
    print(f"Tiny profile: jobs that send no size get {width}x{height} "
          f"(set {ENV_PREFIX}DEFAULT_WIDTH / {ENV_PREFIX}DEFAULT_HEIGHT to change it).")
    return settings.model_copy(update={"default_width": width, "default_height": height})
