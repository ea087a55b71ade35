"""Where answers may go. A request names its own answer endpoint, and anyone who can publish on
the model's topic writes requests: the endpoint is hostile input. Answers go only to the
allowed endpoints (ANSWER_ENDPOINTS, URL prefixes the operator passes from its configuration);
with no allow-list any endpoint is accepted except loopback, link-local (cloud metadata
included) and unspecified addresses, checked on the URL and again on every address a name
resolves to (so a name cannot smuggle them in). Redirects are never followed (delivery.py)."""

from __future__ import annotations

import errno
import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

# ws(s) and http(s) name the same origin: the gateway hands out either form.
_FAMILY = {"http": "http", "ws": "http", "https": "https", "wss": "https"}
_DEFAULT_PORT = {"http": 80, "https": 443}
_LOCAL_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})


class EndpointRefused(ValueError):
    """The request's endpoint is not one answers may go to."""


@dataclass(frozen=True)
class Origin:
    scheme: str  # http or https
    host: str
    port: int
    path: str

    @classmethod
    def parse(cls, url: str) -> Origin:
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise EndpointRefused(f"not a URL: {exc}") from None
        family = _FAMILY.get(parts.scheme.lower())
        if family is None or not parts.hostname:
            raise EndpointRefused("not an http(s) or ws(s) URL with a host")
        if parts.username is not None or parts.password is not None:
            raise EndpointRefused("an endpoint with user:password@ is not accepted")
        return cls(family, parts.hostname.lower().rstrip("."), port or _DEFAULT_PORT[family], parts.path or "/")

    def within(self, prefix: Origin) -> bool:
        if (self.scheme, self.host, self.port) != (prefix.scheme, prefix.host, prefix.port):
            return False
        base = prefix.path.rstrip("/")
        return self.path == base or self.path.startswith(base + "/") or base == ""


def forbidden_address(address: str) -> bool:
    """Loopback, link-local (169.254.169.254 is there), unspecified: not an answer endpoint."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback or ip.is_link_local or ip.is_unspecified


class Policy:
    """The allow-list of answer endpoints; empty: any endpoint but loopback and link-local."""

    def __init__(self, allowed: Iterable[str] = ()) -> None:
        self.allowed = tuple(Origin.parse(url) for url in allowed)

    @property
    def open(self) -> bool:
        return not self.allowed

    def check(self, endpoint: str) -> None:
        """Raises EndpointRefused, naming why, unless answers may go to ``endpoint``."""
        origin = Origin.parse(endpoint)
        if self.allowed:
            if not any(origin.within(prefix) for prefix in self.allowed):
                where = f"{origin.scheme}://{origin.host}:{origin.port}{origin.path}"
                raise EndpointRefused(f"{where} is not an allowed answer endpoint (ANSWER_ENDPOINTS)")
            return
        if origin.host in _LOCAL_NAMES or forbidden_address(origin.host.strip("[]")):
            raise EndpointRefused(f"{origin.host} is a loopback or link-local address; allow it in ANSWER_ENDPOINTS")

    def session(self) -> aiohttp.ClientSession:
        """The session answers go through: no redirect followed (a WebSocket handshake included),
        and with no allow-list, a name resolving to a forbidden address fails to connect."""
        resolver = None if self.allowed else GuardedResolver()
        connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, resolver=resolver)
        trace = aiohttp.TraceConfig()
        trace.on_request_redirect.append(_refuse_redirect)
        return aiohttp.ClientSession(connector=connector, trace_configs=[trace])


class RedirectRefused(aiohttp.ClientError):
    """An answer endpoint answered with a redirect: it is not followed."""


async def _refuse_redirect(session: Any, context: Any, params: aiohttp.TraceRequestRedirectParams) -> None:
    where = redact(str(params.url))
    raise RedirectRefused(f"{where} answered HTTP {params.response.status}: redirects are not followed")


class GuardedResolver(AbstractResolver):
    """The default resolver, minus loopback and link-local answers (a name pointing there fails)."""

    def __init__(self) -> None:
        self._inner = aiohttp.DefaultResolver()

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET) -> list[Any]:
        found: list[ResolveResult] = await self._inner.resolve(host, port, family)
        kept = [entry for entry in found if not forbidden_address(entry["host"])]
        if not kept:
            why = f"{host} resolves only to loopback or link-local addresses; refused as an answer endpoint"
            raise OSError(errno.EACCES, why)
        return kept

    async def close(self) -> None:
        await self._inner.close()


def parse_list(raw: str) -> list[str]:
    """ANSWER_ENDPOINTS: URL prefixes separated by commas or whitespace."""
    return [item for item in raw.replace(",", " ").split() if item]


def redact(url: str) -> str:
    """A URL fit for logs: without ``user:password@``, query or fragment."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<unparsable URL>"
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{host}{port}{parts.path}"
