"""Log lines: the facts of a log call are fields, shown as logfmt for people and as JSON keys
for pipelines."""

import json
import logging

from aimodel_operator import logs


def record(msg: str = "reconcile failed", **values) -> logging.LogRecord:
    rec = logging.LogRecord("aimodel_operator", logging.WARNING, __file__, 1, msg, None, None)
    rec.fields = values
    return rec


def test_json_lines_carry_each_field_as_a_key():
    line = logs.JsonFormatter().format(
        record(namespace="team-a", name="m", retry_in=0.5, ok=True, error=ValueError("x"))
    )
    doc = json.loads(line)
    assert doc["message"] == "reconcile failed"
    assert (doc["namespace"], doc["name"], doc["retry_in"], doc["ok"]) == ("team-a", "m", 0.5, True)
    assert doc["error"] == "x"  # what JSON cannot hold is shown as text
    assert doc["level"] == "warning" and doc["logger"] == "aimodel_operator"


def test_a_field_cannot_take_over_the_lines_own_keys():
    doc = json.loads(logs.JsonFormatter().format(record(message="forged", level="debug")))
    assert doc["message"] == "reconcile failed" and doc["level"] == "warning"
    assert (doc["field.message"], doc["field.level"]) == ("forged", "debug")


def test_plain_lines_are_logfmt_quoted_where_needed():
    line = logs.PlainFormatter().format(record(namespace="team-a", error='a "b" c', available=False, empty=""))
    assert line.endswith(' reconcile failed namespace=team-a error="a \\"b\\" c" available=false empty=""'), line


def test_a_forged_line_end_in_a_field_stays_on_one_line():
    line = logs.PlainFormatter().format(record(name="m\nERROR injected"))
    assert "\n" not in line and 'name="m\\nERROR injected"' in line


def test_calls_without_fields_are_unchanged():
    rec = logging.LogRecord("x", logging.INFO, __file__, 1, "stopping %s", ("a",), None)
    assert logs.PlainFormatter().format(rec).endswith("INFO    x: stopping a")
    assert json.loads(logs.JsonFormatter().format(rec))["message"] == "stopping a"


def test_fields_helper_is_the_extra_of_a_call(caplog):
    with caplog.at_level(logging.INFO, logger="aimodel_operator.test"):
        logging.getLogger("aimodel_operator.test").info("gone", extra=logs.fields(namespace="n", name="m"))
    (rec,) = caplog.records
    assert rec.fields == {"namespace": "n", "name": "m"}
