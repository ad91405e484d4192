"""Who the client is behind a reverse proxy: ``X-Forwarded-For``, believed only from the proxies
``RELAY_TRUSTED_PROXIES`` names.

Every rule that counts by address (sockets and handshakes per address, the held-pipe shares,
the lobby-creation rate, sign-in throttling) and every log line reads ``scope["client"]``. Behind
a proxy that would be the proxy's own address, shared by every client. :class:`ForwardedClient`,
the outermost ASGI layer (``relayproject.asgi``), puts the real client there instead, for HTTP
requests and WebSockets alike and under either server (uvicorn's own proxy-header handling is
turned off in ``lobbies.engine.servers``, and daphne's is off unless asked for, so this is the one
rule).

The rule: when the connection comes from a trusted proxy, the client is the rightmost entry of
``X-Forwarded-For`` that is not itself a trusted proxy (each proxy appends the address it was
reached from, so entries to the left of that one are whatever the client chose to send). When
every entry is a trusted proxy, the leftmost is the client. A header that cannot be read (an
entry that is not an address, an empty entry, more than :data:`MAX_FORWARDED_ENTRIES` entries)
is not guessed at: the proxy's own address stays. From anyone else the header is ignored.

Django reads ``REMOTE_ADDR`` from ``scope["client"]`` (``django.core.handlers.asgi``), so
django-axes (``AXES_IPWARE_META_PRECEDENCE_ORDER = REMOTE_ADDR``) counts the real client too.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable
from functools import lru_cache
from typing import Any

from asgiref.sync import markcoroutinefunction

from lobbies.conf import relay_settings

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

# More entries than this is not a chain of real proxies: the header is refused, not read.
MAX_FORWARDED_ENTRIES = 32

_HEADER = b"x-forwarded-for"


@lru_cache(maxsize=8)
def trusted_networks(proxies: tuple[str, ...]) -> tuple[Network, ...]:
    """The networks of ``proxies`` (addresses or networks as ``RELAY_TRUSTED_PROXIES`` has
    them), parsed once for each value of the setting."""
    # strict=False: "10.0.0.1/8" means the network around it, as the setting's check accepts.
    return tuple(ipaddress.ip_network(proxy.strip(), strict=False) for proxy in proxies)


def _parsed(address: str) -> Address | None:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.scope_id is not None:
        return None  # "fe80::1%eth0": a zone means nothing past the proxy's own links
    return ip


def _trusted(ip: Address, networks: tuple[Network, ...]) -> bool:
    # An IPv4 client of a dual-stack socket is seen as ::ffff:a.b.c.d: judged as a.b.c.d.
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in network for network in networks)


@lru_cache(maxsize=1024)
def is_trusted(address: str, networks: tuple[Network, ...]) -> bool:
    """Whether ``address`` (as a server reports a peer) is one of the trusted proxies
    (remembered: most connections come from a few addresses, the proxies' own)."""
    ip = _parsed(address)
    return ip is not None and _trusted(ip, networks)


def forwarded_client(header: str, networks: tuple[Network, ...]) -> str | None:
    """The client address that ``header`` (the ``X-Forwarded-For`` value a trusted proxy sent,
    several fields joined by commas) names, or None when it cannot be read.

    The rightmost entry that is not in ``networks``, or the leftmost when all are; None for an
    empty header, an entry that is not an IP address, or more than :data:`MAX_FORWARDED_ENTRIES`
    entries.
    """
    # Counted before splitting: a header of a million commas is refused without a list of them.
    if header.count(",") >= MAX_FORWARDED_ENTRIES:
        return None
    entries = header.split(",")
    addresses = [ip for entry in entries if (ip := _parsed(entry.strip())) is not None]
    if len(addresses) != len(entries):
        return None  # one entry is not an address: nothing in the header is believed
    for ip in reversed(addresses):
        if not _trusted(ip, networks):
            return str(ip)
    return str(addresses[0])


def _forwarded_header(headers: Any) -> str | None:
    values = [value.decode("latin-1") for name, value in headers if name == _HEADER]
    # Several fields of one name are one list, in order (RFC 9110, 5.3).
    return ",".join(values) if values else None


class ForwardedClient:
    """The outermost layer: for HTTP and WebSocket connections from a trusted proxy, replaces
    ``scope["client"]`` with the client ``X-Forwarded-For`` names (port 0: the proxy does not say
    which).

    In place, as :class:`lobbies.auth.TicketPath` changes the path: the server's own log lines
    read the same scope and then show the client too.
    """

    def __init__(self, application: Any) -> None:
        self.application = application

    _asgi_single_callable = True  # (asgiref: an ASGI 3 application, though not ``async``)

    # Marked as a coroutine function (it returns one): servers that guess the ASGI version from
    # ``__call__``, as uvicorn run directly does, must not take this for an ASGI 2 application.
    @markcoroutinefunction
    def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Awaitable[Any]:
        # The application's coroutine, not awaited here: no frame of this layer's for the
        # socket's life (see lobbies.engine.routing).
        client = scope.get("client")
        if scope["type"] in ("http", "websocket") and client:
            networks = trusted_networks(relay_settings().trusted_proxies)
            if networks and is_trusted(client[0], networks):
                header = _forwarded_header(scope.get("headers", ()))
                address = forwarded_client(header, networks) if header is not None else None
                if address is not None:
                    scope["client"] = (address, 0)
        return self.application(scope, receive, send)
