"""``aimodel-worker``: run the reference worker with the environment of its pod."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys

from ..errors import ReportError
from ..reasons import Reason
from ..reporter import Reporter
from .settings import SettingsError, WorkerSettings
from .worker import Worker

log = logging.getLogger("aimodel_worker")


def _reporter() -> Reporter | None:
    """The SDK's reporter, or None (with a warning) where there is no AIModel to report to."""
    try:
        return Reporter(component="aimodel-worker")
    except ReportError as exc:
        log.warning("errors will only be logged, not reported to the AIModel: %s", exc)
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="aimodel-worker",
        description="Serve the requests queued for $MODEL_NAME: answer them with the chat-completions API at "
        "$API_URL (or a local server), publish usage to $RES_TOPIC_NAME, report irreversible errors.",
    )
    parser.add_argument("--log-level", default=os.environ.get("LOG_LEVEL", "INFO"))
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s", stream=sys.stderr
    )
    reporter = _reporter()
    try:
        settings = WorkerSettings.from_env()
    except SettingsError as exc:
        log.error("%s", exc)
        if reporter is not None:
            try:
                reporter.report(Reason.CONFIGURATION_ERROR, str(exc))
            except ReportError as err:
                log.error("could not report: %s", err)
        return 1
    return asyncio.run(_serve(settings, reporter))


def run() -> None:
    """The console script: ``main``, then leave without the interpreter's finalization.

    Once the worker has stopped, the Pulsar client is closed and every report flushed, but the
    client library's native threads can still crash the interpreter's teardown (SIGSEGV or
    SIGABRT after a clean close, more often on a busy machine: pulsar-client-python#153). A
    SIGTERM that ended in a crash would read as a failed pod; nothing is left to finalize.
    """
    code = main()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


async def _serve(settings: WorkerSettings, reporter: Reporter | None) -> int:
    worker = Worker(settings, reporter.areport if reporter else None, name=os.environ.get("POD_NAME") or None)
    worker.install_signal_handlers()
    return await worker.run()


if __name__ == "__main__":
    run()
