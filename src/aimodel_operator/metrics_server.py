"""``/metrics`` for Prometheus.

Secure (``--metrics-secure``, what config/ and the chart deploy) the way kubebuilder v4 serves
it: HTTPS, and only to a caller whose bearer token the API server authenticates (a TokenReview)
and authorizes for ``get`` on the non-resource URL ``/metrics`` (a SubjectAccessReview): grant
the ClusterRole ``metrics-reader`` to the scraper. The certificate is ``tls.crt``/``tls.key``
from ``--metrics-cert-dir`` (e.g. cert-manager's Secret, picked up again when it is renewed),
else a self-signed one made at start. Decisions are kept a minute per token (ten seconds for a
refusal), so a scrape costs the API server nothing most of the time.

Not secure: plain HTTP, for a run on one's own machine (the default bind address is 127.0.0.1).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import hashlib
import ipaddress
import logging
import os
import ssl
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from .kube import ACCESS_REVIEWS, TOKEN_REVIEWS, Kube, describe

log = logging.getLogger(__name__)

PATH = "/metrics"
ALLOWED_TTL = 60.0
DENIED_TTL = 10.0
# Distinct tokens remembered; past it the oldest decisions are forgotten first.
CACHE_SIZE = 1024
CERT_CHECK_EVERY = 60.0


@dataclass(frozen=True)
class Decision:
    status: int  # 200, 401 or 403
    reason: str
    until: float


class Authorizer:
    """Who may read /metrics, asked of the API server (TokenReview, then SubjectAccessReview)."""

    def __init__(self, kube: Kube, clock: Callable[[], float] = time.monotonic) -> None:
        self.kube = kube
        self.clock = clock
        self._cache: dict[bytes, Decision] = {}

    async def decide(self, authorization: str | None) -> Decision:
        scheme, _, token = (authorization or "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return Decision(401, "a bearer token is required", 0)
        key = hashlib.sha256(token.encode()).digest()
        now = self.clock()
        cached = self._cache.get(key)
        if cached is not None and cached.until > now:
            return cached
        decision = await self._review(token, now)
        self._cache.pop(key, None)
        self._cache[key] = decision
        while len(self._cache) > CACHE_SIZE:
            del self._cache[next(iter(self._cache))]
        return decision

    async def _review(self, token: str, now: float) -> Decision:
        review = await self.kube.create(
            TOKEN_REVIEWS,
            None,
            {"apiVersion": TOKEN_REVIEWS.api_version, "kind": TOKEN_REVIEWS.kind, "spec": {"token": token}},
            timeout=10,
        )
        status = (review or {}).get("status") or {}
        if not status.get("authenticated"):
            return Decision(401, "the token is not valid", now + DENIED_TTL)
        user = status.get("user") or {}
        spec = {
            "user": user.get("username", ""),
            "uid": user.get("uid", ""),
            "groups": user.get("groups") or [],
            "extra": user.get("extra") or {},
            "nonResourceAttributes": {"path": PATH, "verb": "get"},
        }
        access = await self.kube.create(
            ACCESS_REVIEWS,
            None,
            {"apiVersion": ACCESS_REVIEWS.api_version, "kind": ACCESS_REVIEWS.kind, "spec": spec},
            timeout=10,
        )
        if not ((access or {}).get("status") or {}).get("allowed"):
            return Decision(403, f"{spec['user']} may not get {PATH}", now + DENIED_TTL)
        return Decision(200, "", now + ALLOWED_TTL)


def self_signed(directory: Path, hosts: list[str]) -> tuple[Path, Path]:
    """A certificate and key for ``hosts``, valid a year, written into ``directory``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "aimodel-operator-metrics")])
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    start = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=365))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    crt, pem = directory / "tls.crt", directory / "tls.key"
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    fd = os.open(pem, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
    return crt, pem


class MetricsServer:
    """``authorizer`` None: plain HTTP for anyone who can reach it."""

    def __init__(self, host: str, port: int, authorizer: Authorizer | None = None, cert_dir: str | None = None) -> None:
        self.host = host
        self.port = port
        self.authorizer = authorizer
        self.cert_dir = Path(cert_dir) if cert_dir else None
        self._runner: web.AppRunner | None = None
        self._ssl: ssl.SSLContext | None = None
        self._cert_stamp: tuple[float, float] | None = None
        self._watcher: asyncio.Task[None] | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get(PATH, self._metrics)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        if self.authorizer is not None:
            self._ssl = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            self._ssl.minimum_version = ssl.TLSVersion.TLSv1_2
            if self.cert_dir is not None:
                self._load_cert_dir()
                self._watcher = asyncio.create_task(self._watch_cert_dir(), name="metrics-certificate")
            else:
                with tempfile.TemporaryDirectory() as tmp:
                    crt, pem = self_signed(Path(tmp), ["localhost", "127.0.0.1", self.host])
                    self._ssl.load_cert_chain(crt, pem)
        await web.TCPSite(self._runner, self.host, self.port, ssl_context=self._ssl).start()

    def _stamp(self) -> tuple[float, float]:
        assert self.cert_dir is not None
        return ((self.cert_dir / "tls.crt").stat().st_mtime, (self.cert_dir / "tls.key").stat().st_mtime)

    def _load_cert_dir(self) -> None:
        assert self.cert_dir is not None and self._ssl is not None
        stamp = self._stamp()
        # A Secret volume swaps both files at once (a symlink), so a pair read together matches.
        self._ssl.load_cert_chain(self.cert_dir / "tls.crt", self.cert_dir / "tls.key")
        self._cert_stamp = stamp

    async def _watch_cert_dir(self) -> None:
        """New connections get a renewed certificate (cert-manager) without a restart."""
        while True:
            await asyncio.sleep(CERT_CHECK_EVERY)
            try:
                if self._stamp() != self._cert_stamp:
                    self._load_cert_dir()
                    log.info("metrics certificate reloaded from %s", self.cert_dir)
            except (OSError, ssl.SSLError) as err:
                log.warning("metrics certificate not reloaded, keeping the one before: %s", err)

    async def _metrics(self, request: web.Request) -> web.Response:
        if self.authorizer is not None:
            try:
                decision = await self.authorizer.decide(request.headers.get("Authorization"))
            except Exception as err:
                log.warning("metrics: cannot review the caller: %s", describe(err))
                return web.Response(status=500, text="cannot review the caller's token\n")
            if decision.status != 200:
                headers = {"WWW-Authenticate": 'Bearer realm="metrics"'} if decision.status == 401 else None
                return web.Response(status=decision.status, text=decision.reason + "\n", headers=headers)
        return web.Response(body=generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def stop(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        if self._runner is not None:
            await self._runner.cleanup()
