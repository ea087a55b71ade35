"""``aimodel-report <reason> <message>``: report a worker error from a shell."""

import argparse
import sys

from .errors import ReportError
from .events import DEFAULT_COMPONENT
from .reasons import VALID_REASONS, parse_reason
from .reporter import Reporter


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="aimodel-report",
        description="Report an irreversible worker error on the AIModel named by $AIMODEL_NAME/$AIMODEL_NAMESPACE.",
    )
    parser.add_argument("reason", help=f"one of: {VALID_REASONS}")
    parser.add_argument("message", nargs="+", help="what went wrong; several words are joined with spaces")
    parser.add_argument("--component", default=DEFAULT_COMPONENT, help="source.component of the event")
    args = parser.parse_args(argv)
    try:
        reason = parse_reason(args.reason)
    except ValueError as exc:
        parser.error(str(exc))
    try:
        event = Reporter(component=args.component).report(reason, " ".join(args.message))
    except ReportError as exc:
        print(f"aimodel-report: {exc}", file=sys.stderr)
        return 1
    print(event["metadata"]["name"])
    return 0
