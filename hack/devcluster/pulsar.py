"""Apache Pulsar standalone, from Maven Central jars, as one Java process on 127.0.0.1.

It gives KEDA's Pulsar scaler a real admin API to read the backlog from.
Broker, web service and bookie listen on loopback ports chosen at start; the
metadata store is RocksDB, so no ZooKeeper runs.

As a production cluster would, it authenticates every client with a token (HS256 JWTs signed
with a key generated at start) and authorizes each role per topic; anonymous clients are
refused. The superuser role ``admin``'s token is in the cluster's state
(``pulsar_admin_token``), the key's file too (``pulsar_token_key``); ``token(role)`` mints one
for any role (``make pulsar-token ROLE=x``).
"""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from aimodel_operator.pulsar_auth import tokens

from . import versions
from .base import BuildError, cache_root, free_port, log
from .procs import Supervisor

NAME = "pulsar"

POM = """<?xml version="1.0" encoding="UTF-8"?>
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.devcluster</groupId>
  <artifactId>pulsar-standalone-deps</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencyManagement>
    <dependencies>
      <!-- The distribution's own versions of third-party jars (log4j, jackson, rocksdb). -->
      <dependency>
        <groupId>org.apache.pulsar</groupId><artifactId>pulsar</artifactId>
        <version>{version}</version><type>pom</type><scope>import</scope>
      </dependency>
    </dependencies>
  </dependencyManagement>
  <dependencies>
    <dependency>
      <groupId>org.apache.pulsar</groupId><artifactId>pulsar-broker</artifactId><version>{version}</version>
    </dependency>
  </dependencies>
</project>
"""

# Read twice by the starter: as the broker's configuration and as the bookie's.
STANDALONE_CONF = """clusterName=standalone
advertisedAddress=127.0.0.1
bindAddress=127.0.0.1
brokerServicePort={broker_port}
webServicePort={web_port}
managedLedgerDefaultEnsembleSize=1
managedLedgerDefaultWriteQuorum=1
managedLedgerDefaultAckQuorum=1
loadManagerClassName=org.apache.pulsar.broker.loadbalance.NoopLoadManager
loadBalancerEnabled=false
listeningInterface=lo
allowLoopback=true
allowEphemeralPorts=true
ledgerStorageClass=org.apache.bookkeeper.bookie.storage.ldb.DbLedgerStorage
dbStorage_writeCacheMaxSizeMb=16
dbStorage_readAheadCacheMaxSizeMb=16
dbStorage_rocksDB_blockCacheSize=16777216
journalSyncData=false
journalMaxGroupWaitMSec=1
diskUsageThreshold=0.99
diskUsageWarnThreshold=0.99
webSocketServiceEnabled=true
# Pulsar's broker.conf default, missing from standalone's: a bookie frame must hold a whole
# maxMessageSize entry plus its headers, or a full-size chunk of a chunked message (any
# publisher can send one) breaks the ledger ("Adjusted frame length exceeds 5242880").
nettyMaxFrameSizeBytes=5253120
# Tokens for every client, roles authorized per topic; the broker's own client (it creates
# public/default at start) is the superuser.
authenticationEnabled=true
authenticationProviders=org.apache.pulsar.broker.authentication.AuthenticationProviderToken
tokenSecretKey=file://{key_file}
authorizationEnabled=true
superUserRoles={admin_role}
brokerClientAuthenticationPlugin=org.apache.pulsar.client.impl.auth.AuthenticationToken
brokerClientAuthenticationParameters=file://{admin_token_file}
# How often an open connection's token is checked again (default 60 s): an expired one makes the
# broker ask the client for a fresh one, which tests of renewal want to see within seconds.
authenticationRefreshCheckSeconds=5
"""

ADMIN_ROLE = "admin"

LOG4J = """<?xml version="1.0" encoding="UTF-8"?>
<Configuration status="WARN" shutdownHook="disable">
  <Appenders><Console name="Console" target="SYSTEM_OUT">
    <PatternLayout pattern="%d{ISO8601} [%t] %-5level %logger{36} - %msg%n"/>
  </Console></Appenders>
  <Loggers>
    <Logger name="org.apache.pulsar.broker.rest.RestMessagePublishContext" level="warn"/>
    <Root level="info"><AppenderRef ref="Console"/></Root>
  </Loggers>
</Configuration>
"""

# From Pulsar's bin/pulsar, with a small heap: enough for tests and the demo.
JVM_FLAGS = [
    "-Xmx256m",
    "-XX:MaxDirectMemorySize=256m",
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",
    "-Djava.net.preferIPv4Stack=true",
    "-Dio.netty.tryReflectionSetAccessible=true",
    "--add-opens",
    "java.base/java.io=ALL-UNNAMED",
    "--add-opens",
    "java.base/java.util.zip=ALL-UNNAMED",
    "--add-opens",
    "java.base/java.nio=ALL-UNNAMED",
    "--add-opens",
    "java.base/jdk.internal.misc=ALL-UNNAMED",
    "--add-opens",
    "java.base/sun.net=ALL-UNNAMED",
    "--add-opens",
    "java.management/sun.management=ALL-UNNAMED",
    "--add-opens",
    "java.base/jdk.internal.platform=ALL-UNNAMED",
    "-Dlog4j.shutdownHookEnabled=false",
    "-Dlog4j2.is.webapp=false",
    "-Dbookkeeper.metadata.bookie.drivers=org.apache.pulsar.metadata.bookkeeper.PulsarMetadataBookieDriver",
    "-Dbookkeeper.metadata.client.drivers=org.apache.pulsar.metadata.bookkeeper.PulsarMetadataClientDriver",
]


def lib_dir() -> Path:
    return cache_root() / f"pulsar-{versions.PULSAR}" / "lib"


def build() -> Path:
    """Fetch the broker's jars with Maven, once per version."""
    dest = lib_dir()
    if dest.is_dir() and any(dest.glob("pulsar-broker-*.jar")):
        return dest
    work = dest.parent
    work.mkdir(parents=True, exist_ok=True)
    if shutil.which("mvn") is None:
        raise BuildError("Maven (`mvn`) is needed to fetch Pulsar's jars and is not on PATH")
    log(f"downloading Pulsar {versions.PULSAR} jars with Maven (first time only; ~240 MB)")
    (work / "pom.xml").write_text(POM.format(version=versions.PULSAR))
    tmp = work / "lib.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    res = subprocess.run(
        ["mvn", "-q", "-B", "dependency:copy-dependencies", f"-DoutputDirectory={tmp}"],
        cwd=work,
        capture_output=True,
        text=True,
    )
    if res.returncode != 0:
        raise BuildError(f"Maven could not fetch Pulsar:\n{res.stdout[-3000:]}{res.stderr[-2000:]}")
    tmp.rename(dest)
    log(f"Pulsar jars in {dest}")
    return dest


def running(procs: Supervisor) -> bool:
    return procs.running(NAME)


def admin_url(procs: Supervisor) -> str:
    return str(procs.fact("pulsar_admin_url"))


def token(procs: Supervisor, role: str, ttl: float | None = None) -> str:
    """A token for ``role`` signed with the running Pulsar's key (``ttl`` seconds; None: no expiry)."""
    key = Path(str(procs.fact("pulsar_token_key"))).read_bytes()
    return tokens.mint(key, role, None if ttl is None else int(time.time() + ttl))


def _request(url: str, token: str, method: str = "GET", body: bytes | None = None) -> urllib.request.Request:
    headers = {"Authorization": f"Bearer {token}"}
    if body is not None:
        headers["Content-Type"] = "application/json"
    return urllib.request.Request(url, data=body, method=method, headers=headers)


def _ready(url: str, token: str) -> bool:
    with urllib.request.urlopen(_request(f"{url}/admin/v2/namespaces/public", token), timeout=2) as resp:
        return "public/default" in json.loads(resp.read())


def start(procs: Supervisor) -> str:
    """Start Pulsar standalone next to the cluster whose processes ``procs`` keeps; returns its admin URL."""
    if running(procs):
        return admin_url(procs)
    lib = build()
    log("starting Pulsar standalone")
    home = procs.dir / "pulsar"
    shutil.rmtree(home, ignore_errors=True)
    (home / "data" / "metadata").mkdir(parents=True)
    (home / "data" / "bookkeeper").mkdir(parents=True)
    broker, web, bookie = free_port(), free_port(), free_port()
    key_file, admin_token_file = home / "token.key", home / "admin.jwt"
    key = secrets.token_bytes(tokens.MIN_KEY_BYTES)
    key_file.write_bytes(key)
    admin_token = tokens.mint(key, ADMIN_ROLE)
    admin_token_file.write_text(admin_token)
    for f in (key_file, admin_token_file):
        f.chmod(0o600)
    conf = STANDALONE_CONF.format(
        broker_port=broker,
        web_port=web,
        key_file=key_file,
        admin_role=ADMIN_ROLE,
        admin_token_file=admin_token_file,
    )
    (home / "standalone.conf").write_text(conf)
    (home / "log4j2.xml").write_text(LOG4J)
    comp = procs.spawn(
        NAME,
        [
            shutil.which("java") or "java",
            *JVM_FLAGS,
            f"-Dlog4j.configurationFile={home / 'log4j2.xml'}",
            "-cp",
            f"{lib}/*",
            "org.apache.pulsar.PulsarStandaloneStarter",
            "--config",
            str(home / "standalone.conf"),
            "--metadata-dir",
            str(home / "data" / "metadata"),
            "--bookkeeper-dir",
            str(home / "data" / "bookkeeper"),
            "--bookkeeper-port",
            str(bookie),
            "--advertised-address",
            "127.0.0.1",
            "-nfw",
            "-nss",
            "--wipe-data",
        ],
        cwd=home,
    )
    url = f"http://127.0.0.1:{web}"
    # The admin API answers before the default namespace exists: wait for it.
    procs.wait("Pulsar's public/default namespace", lambda: _ready(url, admin_token), comp, timeout=180)
    procs.remember(
        pulsar_admin_url=url,
        pulsar_url=f"pulsar://127.0.0.1:{broker}",
        pulsar_admin_token=admin_token,
        pulsar_token_key=str(key_file),
    )
    log(f"Pulsar is running: admin {url}, broker pulsar://127.0.0.1:{broker}")
    return url


def backlog(url: str, token: str, topic: str, subscription: str) -> int:
    """The backlog KEDA's Pulsar scaler reads (entries not yet acknowledged by the subscription)."""
    return int(stats(url, token, topic)["subscriptions"][subscription]["msgBacklog"])


def subscribe(url: str, token: str, topic: str, subscription: str) -> None:
    """Create the workers' subscription (KEDA reads its backlog; it must exist first).

    ``topic`` is the REST form, e.g. ``persistent/public/default/model-x``.
    """
    req = _request(f"{url}/admin/v2/{topic}/subscription/{subscription}", token, "PUT")
    try:
        urllib.request.urlopen(req, timeout=30).close()
    except urllib.error.HTTPError as err:
        if err.code != 409:  # it exists already
            raise


def publish(url: str, token: str, topic: str, subscription: str, count: int) -> None:
    """Create the workers' subscription, then queue ``count`` requests as the API gateway would."""
    subscribe(url, token, topic, subscription)
    body = json.dumps({"producerName": "devcluster", "messages": [{"payload": f"request-{i}"} for i in range(count)]})
    req = _request(f"{url}/topics/{topic}", token, "POST", body.encode())
    urllib.request.urlopen(req, timeout=30).close()


def consume(url: str, token: str, topic: str, subscription: str, count: int, timeout: float = 60) -> int:
    """Receive and acknowledge up to ``count`` messages as a worker does (a Shared consumer on
    ``subscription``), through Pulsar's WebSocket API; returns how many were acknowledged.

    ``topic`` is the REST form, e.g. ``persistent/public/default/model-x``.
    """
    import asyncio

    import aiohttp

    ws_url = url.replace("http://", "ws://", 1) + f"/ws/v2/consumer/{topic}/{subscription}?subscriptionType=Shared"

    async def run() -> int:
        acked = 0
        auth = {"Authorization": f"Bearer {token}"}
        async with aiohttp.ClientSession() as session, session.ws_connect(ws_url, headers=auth) as ws:
            try:
                async with asyncio.timeout(timeout):
                    while acked < count:
                        msg = await ws.receive_json()
                        await ws.send_json({"messageId": msg["messageId"]})
                        acked += 1
            except TimeoutError:
                pass
        return acked

    return asyncio.run(run())


def client(broker: str, token: str):
    """A Pulsar client (the Python one, as workers and the gateway use) authenticated with ``token``."""
    import pulsar as pulsar_client

    return pulsar_client.Client(
        broker,
        authentication=pulsar_client.AuthenticationToken(token),
        logger=pulsar_client.ConsoleLogger(pulsar_client.LoggerLevel.Warn),
    )


def stats(url: str, token: str, topic: str) -> dict:
    """A topic's stats from the admin API; ``topic`` in the REST form."""
    with urllib.request.urlopen(_request(f"{url}/admin/v2/{topic}/stats", token), timeout=10) as resp:
        return dict(json.loads(resp.read()))
