"""The operator's configuration is read in one place (config.load), from flags and environment."""

from __future__ import annotations

import pytest

from aimodel_operator.config import Config, load
from aimodel_operator.settings import Settings


def test_defaults_without_flags_or_environment():
    config = load(["run"], {"POD_NAME": "op-0"})
    assert config == Config(instance="op-0")


def test_the_environment_stands_in_for_flags_and_flags_win():
    env = {
        "POD_NAME": "op-1",
        "POD_NAMESPACE": "ops",
        "BIND_ADDRESS": "0.0.0.0",
        "WATCH_IDLE_TIMEOUT": "0",
        "WATCH_NAMESPACES": "a,b",
        "PULSAR_URL": "pulsar://p:6650",
        "PULSAR_ADMIN_URL": "http://p:8080",
        "ANSWER_ENDPOINTS": "http://gw/res",
    }
    config = load(["run", "--leader-elect", "--namespaces", "c", "--workers", "4"], env)
    assert config.instance == "op-1"
    assert config.leader_elect and config.leader_election_namespace == "ops"
    assert config.bind_address == "0.0.0.0"
    assert config.watch_idle is None, "0: watches are never taken for dead"
    assert config.namespaces == ("c",) and config.workers == 4
    assert config.worker == Settings.from_env(env)
    assert config.worker.pulsar_url == "pulsar://p:6650" and config.worker.answer_endpoints == "http://gw/res"


def test_the_crd_command_needs_no_configuration():
    assert load(["crd"], {}).command == "crd"


def test_a_bad_namespace_is_refused_naming_it(capsys):
    with pytest.raises(SystemExit):
        load(["run", "--namespaces", "Team_A"], {})
    assert "'Team_A' is not a namespace name" in capsys.readouterr().err


def test_without_credentials_the_operator_says_so_once_and_exits_1(tmp_path):
    import subprocess
    import sys

    env = {"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-m", "aimodel_operator.cli", "run", "--health-port", "0", "--metrics-port", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1, done.stderr
    assert "no Kubernetes credentials found" in done.stderr
    assert "Traceback" not in done.stderr
