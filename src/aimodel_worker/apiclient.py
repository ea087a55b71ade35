"""A minimal JSON client for the Kubernetes API server, with retries."""

import email.utils
import http.client
import json
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, cast

from aimodel_contract import backoff

from .credentials import Credentials
from .errors import ApiError, PermissionDenied, ReportError

RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})
USER_AGENT = "aimodel-worker"


def retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def _server_message(body: bytes) -> str:
    """The ``message`` of a Kubernetes Status body, else the raw body."""
    text = body.decode(errors="replace").strip()
    try:
        status = json.loads(text)
    except ValueError:
        return text
    return str(status.get("message") or text) if isinstance(status, dict) else text


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """urllib's default opener follows 301/302/303/307/308, Authorization header included, to any
    host and even from https to http: a redirect would carry the pod's token away. None is
    followed; the 3xx comes back as an error."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        return None


class _HTTPSHandler(urllib.request.HTTPSHandler):
    """HTTPS with the kubeconfig's tls-server-name as the name the certificate must carry."""

    def __init__(self, context: ssl.SSLContext, server_name: str | None) -> None:
        super().__init__(context=context)
        self._context = context
        self._server_name = server_name

    def https_open(self, req):  # type: ignore[no-untyped-def]
        if not self._server_name:
            return super().https_open(req)
        name, context = self._server_name, self._context

        class Named(http.client.HTTPSConnection):
            def connect(self) -> None:
                http.client.HTTPConnection.connect(self)
                self.sock = context.wrap_socket(self.sock, server_hostname=name)

        return self.do_open(Named, req, context=context)


class ApiClient:
    """Sends JSON requests, retrying connection errors and 429/5xx answers with backoff."""

    def __init__(
        self,
        credentials: Credentials,
        *,
        attempts: int = 5,
        backoff: float = 0.2,
        max_delay: float = 30.0,
        timeout: float = 10.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.credentials = credentials
        self.attempts = max(1, attempts)
        self.backoff = backoff
        self.max_delay = max_delay
        self.timeout = timeout
        self._sleep = sleep
        handlers: list[urllib.request.BaseHandler] = [_NoRedirects()]
        if credentials.server.startswith("https:"):
            handlers.append(_HTTPSHandler(credentials.ssl_context(), credentials.tls_server_name))
        # The kubeconfig's proxy-url wins over the environment's HTTP(S)_PROXY, as in client-go.
        proxy = credentials.proxy_url
        if proxy:
            handlers.append(urllib.request.ProxyHandler({"http": proxy, "https": proxy}))
        self._opener = urllib.request.build_opener(*handlers)

    def request(
        self, method: str, path: str, body: dict[str, Any], content_type: str = "application/json"
    ) -> dict[str, Any]:
        """Send ``body`` and return the decoded JSON answer."""
        data = json.dumps(body).encode()
        attempt = 0
        while True:
            attempt += 1
            headers = {"Content-Type": content_type, "Accept": "application/json", "User-Agent": USER_AGENT}
            # Fetched per attempt so that a rotated service account token is picked up.
            token = self.credentials.bearer_token()
            if token:
                headers["Authorization"] = f"Bearer {token}"
            req = urllib.request.Request(self.credentials.server + path, data=data, headers=headers, method=method)
            try:
                with self._opener.open(req, timeout=self.timeout) as resp:
                    return cast(dict[str, Any], json.load(resp))
            except json.JSONDecodeError as exc:
                raise ReportError(f"{method} {path}: the API server's answer is not JSON: {exc}") from exc
            except urllib.error.HTTPError as exc:
                message = _server_message(exc.read())
                if exc.code in (401, 403):
                    raise PermissionDenied(exc.code, _denied(method, path, exc.code, message)) from None
                if 300 <= exc.code < 400:
                    raise ApiError(exc.code, f"{method} {path}: HTTP {exc.code}: redirects are not followed") from None
                if exc.code not in RETRYABLE_STATUSES or attempt == self.attempts:
                    tries = f" after {attempt} attempts" if attempt > 1 else ""
                    raise ApiError(exc.code, f"{method} {path} failed{tries}: HTTP {exc.code}: {message}") from None
                delay = retry_after(exc.headers.get("Retry-After"))
            except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
                reason = getattr(exc, "reason", exc)
                if isinstance(reason, ssl.SSLCertVerificationError):
                    raise ReportError(f"cannot verify the API server's certificate: {reason}") from exc
                if attempt == self.attempts:
                    raise ReportError(
                        f"cannot reach the API server at {self.credentials.server} after {attempt} attempts: {reason}"
                    ) from exc
                delay = None
            self._sleep(min(self.max_delay, delay if delay is not None else self._backoff(attempt)))

    def _backoff(self, attempt: int) -> float:
        # Jitter spreads out the retries of many worker replicas failing at once.
        return backoff.delay(attempt - 1, self.backoff, float("inf"))


def _denied(method: str, path: str, status: int, message: str) -> str:
    return (
        f"the API server refused {method} {path} (HTTP {status}): {message}. "
        "The pod's ServiceAccount must be allowed to create and patch events in its namespace; "
        "the operator grants this to the model's ServiceAccount, so check that the worker runs with it"
    )
