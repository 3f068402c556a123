"""Who the client is when the gateway sits behind a reverse proxy: `X-Forwarded-For`,
believed only from the proxies the installer named (`[api] trusted_proxies`).

Anyone can send `X-Forwarded-For`. Believed from any peer (uvicorn's default
believes it from loopback), it let a caller pick the address the login limit
counts and the audit log records. So by default it is ignored; when the direct
peer is a named proxy, the client is the right-most address of the chain that
is not itself a named proxy: everything left of that was written by whoever
connected to the proxy, and may be made up.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

from starlette.types import ASGIApp, Receive, Scope, Send

Network = IPv4Network | IPv6Network


class ForwardedFor:
    """ASGI middleware: the scope's client becomes the forwarded one, from trusted proxies only."""

    def __init__(self, app: ASGIApp, trusted: Iterable[Network]) -> None:
        self._app = app
        self._trusted = tuple(trusted)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        client = scope.get("client")
        if scope["type"] == "http" and self._trusted and client and self.trusts(client[0]):
            chain = b",".join(v for k, v in scope["headers"] if k.lower() == b"x-forwarded-for")
            forwarded = self.client_of(chain.decode("latin-1"))
            if forwarded is not None:
                scope = dict(scope, client=(forwarded, 0))
        await self._app(scope, receive, send)

    def trusts(self, host: str) -> bool:
        address = _address(host)
        return address is not None and any(address in network for network in self._trusted)

    def client_of(self, chain: str) -> str | None:
        """The right-most untrusted address of an `X-Forwarded-For` chain; None if the chain
        is empty or holds something that is not an address (then the peer itself counts)."""
        hops = [_address(hop.strip()) for hop in chain.split(",") if hop.strip()]
        if not hops or any(hop is None for hop in hops):
            return None
        for hop in reversed(hops):
            if not any(hop in network for network in self._trusted):
                return str(hop)
        return str(hops[0])


def _address(text: str) -> IPv4Address | IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None
