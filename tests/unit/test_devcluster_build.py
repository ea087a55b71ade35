"""Building the local cluster fails with a clear message, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

HACK = Path(__file__).resolve().parents[2] / "hack"


def _build(tmp_path: Path, path: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": path, "AIMODEL_CACHE_DIR": str(tmp_path / "cache"), "PYTHONPATH": str(HACK)}
    return subprocess.run(
        [sys.executable, "-m", "devcluster", "build"], env=env, capture_output=True, text=True, timeout=60
    )


def test_without_go_the_build_says_so(tmp_path):
    empty = tmp_path / "bin"
    empty.mkdir()
    res = _build(tmp_path, str(empty))
    assert res.returncode == 1
    assert "[devcluster] error: Go is needed to build the local cluster" in res.stderr
    assert "Traceback" not in res.stderr


def test_a_failing_go_build_ends_with_its_output(tmp_path):
    fake = tmp_path / "bin"
    fake.mkdir()
    go = fake / "go"
    # A Go toolchain that fails the way a broken module or a full disk would.
    go.write_text("#!/bin/sh\necho 'compile: no space left on device' >&2\nexit 1\n")
    go.chmod(0o755)
    res = _build(tmp_path, f"{fake}:/usr/bin:/bin")
    assert res.returncode == 1
    assert res.stderr.startswith("[devcluster] error: etcd v")
    assert "compile: no space left on device" in res.stderr
    assert "Traceback" not in res.stderr
