"""A stand-in AI model worker for testing the operator.

It prints its environment (secrets masked) and serves HTTP:

* ``GET /?reason=<Reason>&message=<text>`` reports that error through the SDK
  and answers ``{"reported": true, "reason": ..., "message": ..., "event": <event name>}``;
* ``GET /healthz`` answers ``ok``.
"""

import argparse
import contextlib
import json
import os
import signal
import sys
import threading
from collections.abc import Callable, Mapping
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from aimodel_worker import Reporter, ReportError
from aimodel_worker.reasons import VALID_REASONS, Reason, parse_reason

# Variables the operator sets in worker pods, listed even when unset.
WORKER_VARIABLES = (
    "NODE_TYPE",
    "MODEL_NAME",
    "API_URL",
    "API_KEY",
    "MAX_PROCESS_NUM",
    "AIMODEL_NAME",
    "AIMODEL_NAMESPACE",
    "PULSAR_URL",
    "PULSAR_TOKEN",
    "RES_TOPIC_NAME",
)
SECRET_MARKERS = ("KEY", "TOKEN", "SECRET", "PASSWORD")


def is_secret(name: str) -> bool:
    return any(marker in name.upper() for marker in SECRET_MARKERS)


def masked_environment(env: Mapping[str, str]) -> list[str]:
    """``NAME=value`` lines, sorted, with secret values shown as ``****``."""
    lines = []
    for name in sorted(set(env) | set(WORKER_VARIABLES)):
        value = env.get(name)
        if value is None:
            value = "<unset>"
        elif is_secret(name) and value:
            value = "****"
        lines.append(f"{name}={value}")
    return lines


class WorkerHandler(BaseHTTPRequestHandler):
    server: "WorkerServer"

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if url.path == "/healthz":
            self._send(HTTPStatus.OK, b"ok", "text/plain")
        elif url.path == "/":
            self._report(parse_qs(url.query))
        else:
            self._json(HTTPStatus.NOT_FOUND, {"error": f"no such path: {url.path}"})

    def _report(self, query: dict[str, list[str]]) -> None:
        try:
            reason = parse_reason(query.get("reason", [""])[0])
        except ValueError as exc:
            self._json(HTTPStatus.BAD_REQUEST, {"error": str(exc), "valid_reasons": list(Reason)})
            return
        if "message" not in query:
            self._json(HTTPStatus.BAD_REQUEST, {"error": "the message parameter is missing"})
            return
        message = query["message"][0]
        try:
            event = self.server.reporter().report(reason, message)
        except ReportError as exc:
            self._json(HTTPStatus.INTERNAL_SERVER_ERROR, {"reported": False, "error": str(exc)})
            return
        body = {"reported": True, "reason": str(reason), "message": message, "event": event["metadata"]["name"]}
        self._json(HTTPStatus.OK, body)

    def _json(self, status: HTTPStatus, body: dict) -> None:
        self._send(status, json.dumps(body).encode(), "application/json")

    def _send(self, status: HTTPStatus, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class WorkerServer(ThreadingHTTPServer):
    """Serves WorkerHandler; one Reporter is shared so repeated errors update their event."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], reporter_factory: Callable[[], Reporter] = Reporter) -> None:
        super().__init__(address, WorkerHandler)
        self._reporter_factory = reporter_factory
        self._reporter: Reporter | None = None
        self._lock = threading.Lock()

    def reporter(self) -> Reporter:
        # Built on first use so the worker starts (and shows the problem in the answer) even if misconfigured.
        with self._lock:
            if self._reporter is None:
                self._reporter = self._reporter_factory()
            return self._reporter


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="0.0.0.0", help="address to listen on (default: 0.0.0.0)")
    parser.add_argument(
        "--port", type=int, default=int(os.environ.get("PORT", "8080")), help="port (default: $PORT or 8080)"
    )
    args = parser.parse_args(argv)
    for line in masked_environment(os.environ):
        print(line)
    with WorkerServer((args.host, args.port)) as server:
        # As PID 1 in a container, SIGTERM would be ignored without a handler; stop as on Ctrl-C.
        signal.signal(signal.SIGTERM, signal.default_int_handler)
        print(f"test worker listening on {args.host}:{server.server_address[1]}; valid reasons: {VALID_REASONS}")
        sys.stdout.flush()
        with contextlib.suppress(KeyboardInterrupt):
            server.serve_forever()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
