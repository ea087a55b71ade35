"""uplion's Python worker (WorkerNodePython in uplion/WorkerNode), as `make peers` builds it
(hack/peers/uplion-worker.sh) into .peers/, run as a process with the environment ours gets, so
that `make bench-worker` can measure both side by side.

How it differs in what it is given: API_URL is the base ending in /v1 (it appends
/chat/completions itself), the topic is model-<MODEL_NAME> with the subscription
model-<MODEL_NAME>-subscription (as ours), and its streamed answers are counted with tiktoken's
cl100k_base (gpt-3.5-turbo's encoding, for any NODE_TYPE but "api"), found in a local cache since
tiktoken's own download place is not reachable here. It reads the request messages the gateway
queues ({"request_id", "endpoint", "stream", "data"}) and POSTs {"request_id", "data"} to the
endpoint, as ours does. It publishes no usage record (its sendResult is commented out upstream).
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SOURCE = REPO / ".peers" / "src" / "WorkerNode" / "WorkerNodePython" / "WorkerNode"
HOME = REPO / ".peers" / "uplion-worker"
PYTHON = HOME / "venv" / "bin" / "python"
TIKTOKEN_CACHE = HOME / "tiktoken-cache"

NAME = "uplion's worker"


def available() -> bool:
    """Built by `make peers` (which needs the source cloned into .peers/src/WorkerNode)."""
    return PYTHON.exists() and any(TIKTOKEN_CACHE.glob("*")) and (SOURCE / "WorkerNode.py").exists()


def environment(ours: dict[str, str]) -> dict[str, str]:
    """Its variables for the model that ``ours`` (our worker's environment) serves."""
    api = ours["API_URL"].rstrip("/")
    return {
        "NODE_TYPE": "remote",
        "MODEL_NAME": ours["MODEL_NAME"],
        "API_URL": api if api.endswith("/v1") else f"{api}/v1",
        "API_KEY": ours["API_KEY"],
        "MAX_PROCESS_NUM": ours["MAX_PROCESS_NUM"],
        "PULSAR_URL": ours["PULSAR_URL"],
        "PULSAR_TOKEN": ours.get("PULSAR_TOKEN", ""),
        "RES_TOPIC_NAME": ours["RES_TOPIC_NAME"],
        "TIKTOKEN_CACHE_DIR": str(TIKTOKEN_CACHE),
    }


class UplionWorkerProcess:
    """One of its processes (``python3 WorkerNode.py`` in its source folder, as its image runs it)."""

    def __init__(self, ours: dict[str, str], log: Path) -> None:
        self.env = environment(ours)
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> UplionWorkerProcess:
        keep = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR")}
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [str(PYTHON), "WorkerNode.py"],
                cwd=SOURCE,
                env={**keep, **self.env},
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        return self

    def stop(self, timeout: float = 30) -> int | None:
        """SIGTERM (it has no handler: the process ends), SIGKILL if it is still there."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode
