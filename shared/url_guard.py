"""Webhook URL guard against server-side request forgery.

A webhook URL is checked twice: when the job is submitted and again right before each delivery.
Every address the host resolves to must be a public unicast address; the first one is returned so
the delivery connects to exactly that address (*pinning*) — a second DNS lookup at connect time
could answer differently (DNS rebinding) and is never made.

Refused: anything but http/https, credentials in the URL, and addresses that are loopback, private,
link-local (which covers 169.254.169.254 cloud metadata), shared/CGNAT (100.64/10, Alibaba's
metadata 100.100.100.200), multicast, reserved, unspecified or otherwise not globally routable —
in IPv4 and IPv6, including IPv6 forms that embed an IPv4 address (IPv4-mapped ``::ffff:a.b.c.d``,
IPv4-compatible ``::a.b.c.d``, 6to4 ``2002::/16``, Teredo ``2001::/32``, NAT64 ``64:ff9b::/96`` and
``64:ff9b:1::/48``), whose embedded address is checked as well.

Addresses written in any form the system resolver reads as an address (``127.1``, ``0``,
``0x7f.0.0.1``, ``2130706433``) and ``localhost`` names are checked as the address they mean, at
submit already, without a lookup.

``allow_hosts`` (``settings.webhook_allow_hosts``) lists host names or literal addresses that skip
the address check, for local development against a receiver on loopback.

Example::

    target = resolve_webhook_target("https://hooks.example.com/idbody", allow_hosts=[])
    target.address   # '93.184.215.14' — connect here, send Host/SNI hooks.example.com
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from shared.errors import ErrorCode, IdentityBodyError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Sequence[str]]

_DEFAULT_PORTS = {"http": 80, "https": 443}
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")
MAX_URL_LENGTH = 2048


class WebhookResolutionError(OSError):
    """The host name did not resolve. Retryable at delivery time; refused at submit time."""


@dataclass(frozen=True)
class WebhookTarget:
    """Where one delivery goes: connect to ``address``:``port``, speak ``scheme`` to ``host``."""

    url: str
    scheme: str
    host: str
    port: int
    address: str


def system_resolver(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (A and AAAA), in resolver order."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise WebhookResolutionError(f"could not resolve {host!r}: {exc}") from None
    return [str(info[4][0]).split("%", 1)[0] for info in infos]


def embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries by a transition mechanism, if any.

    Example::

        embedded_ipv4(ipaddress.ip_address("::ffff:127.0.0.1"))   # IPv4Address('127.0.0.1')
    """
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]  # the client address (obfuscated form decoded by ipaddress)
    if any(address in net for net in _NAT64) or (address in _IPV4_COMPATIBLE and int(address) > 1):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def refusal_reason(address: IPAddress) -> str | None:
    """Why ``address`` may not be a webhook target, or None when it is a public unicast address.

    Example::

        refusal_reason(ipaddress.ip_address("10.0.0.1"))   # 'private'
    """
    checks = (
        ("unspecified", address.is_unspecified),
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("private", address.is_private),
        ("reserved", address.is_reserved),
        ("not globally routable", not address.is_global),
    )
    for reason, hit in checks:
        if hit:
            return reason
    if isinstance(address, ipaddress.IPv6Address):
        inner = embedded_ipv4(address)
        if inner is not None:
            inner_reason = refusal_reason(inner)
            if inner_reason:
                return f"embeds {inner} ({inner_reason})"
    return None


def _refuse(message: str) -> IdentityBodyError:
    return IdentityBodyError(ErrorCode.WEBHOOK_URL_REFUSED, message, field="webhook_url")


def parse_webhook_url(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of an acceptable URL shape, or IdentityBodyError(webhook_url_refused)."""
    if len(url) > MAX_URL_LENGTH:
        raise _refuse(f"webhook_url is longer than {MAX_URL_LENGTH} characters.")
    try:
        parts = urlsplit(url)
        port = parts.port
        hostname = parts.hostname
    except ValueError as exc:
        raise _refuse(f"webhook_url is not a valid URL ({exc}).") from None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise _refuse("webhook_url must start with http:// or https://.")
    if parts.username is not None or parts.password is not None:
        raise _refuse("webhook_url must not contain credentials; authenticate with the webhook signature.")
    host = (hostname or "").rstrip(".")
    if not host:
        raise _refuse("webhook_url has no host name.")
    return scheme, host, port or _DEFAULT_PORTS[scheme]


# the IPv4 spellings the C resolver takes as an address without a lookup (inet_aton): 1 to 4 parts,
# each decimal, octal (leading 0) or hex (0x): 127.1, 0, 0x7f.0.0.1, 2130706433, 0177.0.0.1
_INET_ATON_FORM = re.compile(r"^(0x[0-9a-f]*|[0-9]+)(\.(0x[0-9a-f]*|[0-9]+)){0,3}$", re.IGNORECASE)
# RFC 6761: localhost and every name under it are loopback, answered without asking DNS
_LOOPBACK_NAMES = ("localhost",)


def literal_address(host: str) -> IPAddress | None:
    """The address ``host`` spells, in any form the resolver reads as an address, or None for a name.

    Example::

        literal_address("0x7f.1")       # IPv4Address('127.0.0.1')
        literal_address("2130706433")   # IPv4Address('127.0.0.1')
    """
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if _INET_ATON_FORM.match(host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def _loopback_name(host: str) -> IPAddress | None:
    name = host.lower()
    if any(name == n or name.endswith("." + n) for n in _LOOPBACK_NAMES):
        return ipaddress.IPv4Address("127.0.0.1")
    return None


def _is_allowed(host: str, allow_hosts: Iterable[str]) -> bool:
    wanted = host.lower()
    return any(wanted == entry.strip().lower().strip("[]").rstrip(".") for entry in allow_hosts)


def check_webhook_url(url: str, allow_hosts: Iterable[str] = ()) -> str:
    """The submit-time check: the URL's shape, and its host when it is a literal address. A host
    name is not looked up here: the answer could change before delivery anyway (which resolves,
    checks every address and pins one), a lookup would put DNS latency and outages on the submit
    path, and an answer would tell a caller what our resolver sees. Returns the URL, stripped.

    Example::

        check_webhook_url("http://[::1")   # IdentityBodyError(webhook_url_refused), never a 500
    """
    url = url.strip()
    _, host, _ = parse_webhook_url(url)
    literal = literal_address(host) or _loopback_name(host)
    if literal is not None and not _is_allowed(host, allow_hosts):
        reason = refusal_reason(literal)
        if reason:
            raise _refuse(f"webhook_url host {host} is a {reason} address; webhooks go only to public addresses.")
    return url


def resolve_webhook_target(
    url: str, allow_hosts: Iterable[str] = (), resolver: Resolver = system_resolver
) -> WebhookTarget:
    """Check ``url`` and return the address to pin for the connection.

    Raises IdentityBodyError(webhook_url_refused) for a refused URL and WebhookResolutionError when
    the name does not resolve.

    Example::

        resolve_webhook_target("http://127.0.0.1:9000/hook", allow_hosts=["127.0.0.1"]).address
        # '127.0.0.1'
    """
    scheme, host, port = parse_webhook_url(url)
    literal = literal_address(host)
    raw = [str(literal)] if literal is not None else list(resolver(host, port))
    addresses = [ipaddress.ip_address(a) for a in raw]
    if not addresses:
        raise WebhookResolutionError(f"{host!r} resolved to no address")
    if not _is_allowed(host, allow_hosts):
        # every answer must be public: a mixed answer would let a later connection land privately
        for address in addresses:
            reason = refusal_reason(address)
            if reason:
                raise _refuse(
                    f"webhook_url host {host} resolves to {address}, a {reason} address; "
                    "webhooks go only to public addresses."
                )
    return WebhookTarget(url=url, scheme=scheme, host=host, port=port, address=str(addresses[0]))
