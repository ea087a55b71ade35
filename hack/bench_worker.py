"""`make bench-worker`: the reference worker's throughput through the real Pulsar.

Starts Pulsar standalone (in .devcluster-bench-worker/, no Kubernetes needed), the stand-in
OpenAI-style API answering after a fixed model latency, and the stand-in gateway endpoint; then,
for each MAX_PROCESS_NUM, queues requests on a topic of its own, starts one `aimodel-worker`
process and measures how fast it answers them: requests per second from the first answer to the
last, against the ceiling the model latency sets (MAX_PROCESS_NUM / latency).

With uplion's Python worker built by `make peers` (.peers/uplion-worker/, see
hack/peers/uplion_worker.py), each measurement is made for it too, in the same invocation,
alternating with ours: same Pulsar, same stand-in upstream and latency, same request counts, a
topic of its own each time, who goes first alternating between rounds (--rounds).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
import uuid
from pathlib import Path

from devcluster import pulsar as pulsar_mod
from devcluster.procs import Supervisor
from peers import uplion_worker
from standins.endpoint import EndpointStandIn
from standins.kubelet import WorkerProcess
from standins.openai_api import OpenAIStandIn

REPO = Path(__file__).resolve().parents[1]
STATE_DIR = REPO / ".devcluster-bench-worker"
# MAX_PROCESS_NUM -> requests queued
RUNS = {1: 100, 16: 1000, 256: 3000}


OURS = "aimodel-worker"


def measure(
    broker: str,
    token: str,
    api: OpenAIStandIn,
    gateway: EndpointStandIn,
    concurrency: int,
    count: int,
    worker_kind: str = OURS,
    round_no: int = 1,
    extra_env: dict[str, str] | None = None,
) -> dict:
    import pulsar

    model = f"bench-{uuid.uuid4().hex[:6]}"
    api.models.add(model)
    topic = f"persistent://public/default/model-{model}"
    client = pulsar_mod.client(broker, token)
    # The workers' subscription first, so that the queued requests are kept for it.
    client.subscribe(topic, f"model-{model}-subscription", consumer_type=pulsar.ConsumerType.Shared).close()
    producer = client.create_producer(topic, batching_enabled=True, block_if_queue_full=True)
    ids = []
    for i in range(count):
        rid, message = gateway.request(model, f"request number {i}")
        ids.append(rid)
        producer.send_async(json.dumps(message).encode(), None)
    producer.flush()
    producer.close()
    client.close()
    env = {
        "MODEL_NAME": model,
        "NODE_TYPE": "remote",
        "API_URL": api.url,
        "API_KEY": api.api_key,
        "MAX_PROCESS_NUM": str(concurrency),
        "PULSAR_URL": broker,
        "PULSAR_TOKEN": token,
        "RES_TOPIC_NAME": "res-topic",
        "ANSWER_ENDPOINTS": gateway.url,
        "LOG_LEVEL": "WARNING",
        **(extra_env or {}),
    }
    log = STATE_DIR / f"{'ours' if worker_kind == OURS else 'uplion'}-{concurrency}-{round_no}.log"
    if worker_kind == OURS:
        worker: WorkerProcess | uplion_worker.UplionWorkerProcess = WorkerProcess(env, log).start()
    else:
        worker = uplion_worker.UplionWorkerProcess(env, log).start()
    try:
        gateway.answer(ids[0], timeout=120)
        first = time.monotonic()
        for rid in ids:
            gateway.answer(rid, timeout=300)
        last = time.monotonic()
    finally:
        worker.stop()
    rps = (count - 1) / (last - first) if last > first else float("inf")
    return {
        "worker": worker_kind,
        "round": round_no,
        "max_process_num": concurrency,
        "requests": count,
        "requests_per_second": round(rps, 1),
        "drain_seconds": round(last - first, 2),
        "ceiling_rps": round(concurrency / api.delay, 1) if api.delay else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--latency", type=float, default=0.05, help="the stand-in model's latency per request (s)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--rounds", type=int, default=1, help="measurements of each worker at each MAX_PROCESS_NUM")
    parser.add_argument(
        "--max-process-num", type=int, action="append", choices=sorted(RUNS), help="only these (repeatable)"
    )
    parser.add_argument(
        "--worker-env", action="append", default=[], metavar="NAME=VALUE", help="more environment for ours"
    )
    parser.add_argument("--no-peer", action="store_true", help="ours only, even with uplion's worker built")
    args = parser.parse_args(argv)
    kinds = [OURS]
    if args.no_peer:
        pass
    elif uplion_worker.available():
        kinds.append(uplion_worker.NAME)
    else:
        print("uplion's worker is not built (make peers): measuring ours against the ceiling only", flush=True)
    shutil.rmtree(STATE_DIR, ignore_errors=True)
    procs = Supervisor(STATE_DIR)
    results = []
    try:
        pulsar_mod.start(procs)
        broker = str(procs.fact("pulsar_url"))
        with OpenAIStandIn(models=()) as api, EndpointStandIn() as gateway:
            api.delay = args.latency
            for concurrency, count in RUNS.items():
                if args.max_process_num and concurrency not in args.max_process_num:
                    continue
                for round_no in range(1, args.rounds + 1):
                    # Who goes first alternates between rounds.
                    for kind in kinds if round_no % 2 else kinds[::-1]:
                        result = measure(
                            broker,
                            str(procs.fact("pulsar_admin_token")),
                            api,
                            gateway,
                            concurrency,
                            count,
                            kind,
                            round_no,
                            dict(e.split("=", 1) for e in args.worker_env) if kind == OURS else None,
                        )
                        results.append(result)
                        print(
                            f"{kind:<16} MAX_PROCESS_NUM={concurrency:<4} {result['requests']:>5} requests: "
                            f"{result['requests_per_second']:>7} req/s (ceiling at {args.latency * 1000:.0f} ms "
                            f"per request: {result['ceiling_rps']}), drained in {result['drain_seconds']} s",
                            flush=True,
                        )
    finally:
        procs.stop(procs.components())
    if args.json:
        args.json.write_text(json.dumps({"latency_s": args.latency, "runs": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
