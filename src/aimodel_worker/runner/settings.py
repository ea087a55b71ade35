"""The worker's configuration, read once from the environment the operator gives its pods."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

import aimodel_contract as contract
from aimodel_contract import Env

from . import endpoints, openai_api

# Where a NODE_TYPE=local worker finds its model server (llamafile and llama.cpp's default port).
DEFAULT_LOCAL_API_URL = "http://127.0.0.1:8080"
# A message larger than this is not parsed (Pulsar's own default limit is 5 MiB).
DEFAULT_MAX_MESSAGE_BYTES = 4 << 20
# A message handed back this many times more goes to the dead-letter topic model-<model>-DLQ.
DEFAULT_MAX_REDELIVERIES = 5
# Milliseconds a usage record may wait to be sent to the result topic in one batch with others.
DEFAULT_USAGE_PUBLISH_DELAY_MS = 10.0


class SettingsError(ValueError):
    """A variable is missing or malformed: a ConfigurationError the worker reports, then exits."""


@dataclass(frozen=True)
class WorkerSettings:
    model_name: str
    node_type: str
    chat_url: str
    api_key: str
    max_process_num: int
    pulsar_url: str
    pulsar_token: str
    res_topic: str
    aimodel_name: str
    aimodel_namespace: str
    # Seconds an upstream call may take, streams included.
    upstream_timeout: float = 600.0
    # Seconds in-flight requests get to finish after SIGTERM before they are handed back.
    shutdown_grace: float = 20.0
    # URL prefixes answers may go to (ANSWER_ENDPOINTS); empty: any but loopback and link-local.
    answer_endpoints: tuple[str, ...] = ()
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    max_redeliveries: int = DEFAULT_MAX_REDELIVERIES
    # USAGE_PUBLISH_DELAY_MS: how long a usage record may wait for others to be sent with it in one
    # batch (fewer sends to the broker under load; its request's slot is free meanwhile); 0: alone.
    usage_publish_delay_ms: float = DEFAULT_USAGE_PUBLISH_DELAY_MS

    @property
    def topic(self) -> str:
        return contract.topic(self.model_name)

    @property
    def subscription(self) -> str:
        return contract.subscription(self.model_name)

    @property
    def dead_letter_topic(self) -> str:
        return contract.dead_letter_topic(self.model_name)

    @property
    def dead_letter_subscription(self) -> str:
        """Created with the dead-letter topic so that what lands there is kept until read."""
        return contract.dead_letter_subscription(self.model_name)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> WorkerSettings:
        env = os.environ if env is None else env

        def required(name: str) -> str:
            value = env.get(name, "").strip()
            if not value:
                raise SettingsError(f"environment variable {name} is not set; the operator sets it in worker pods")
            return value

        def number(name: str, default: float, minimum: float) -> float:
            raw = env.get(name, "").strip()
            if not raw:
                return default
            try:
                value = float(raw)
            except ValueError:
                raise SettingsError(f"{name}={raw!r} is not a number") from None
            if value < minimum:
                raise SettingsError(f"{name}={raw!r} must be at least {minimum:g}")
            return value

        node_type = env.get(Env.NODE_TYPE, "remote").strip() or "remote"
        if node_type not in ("local", "remote"):
            raise SettingsError(f"NODE_TYPE={node_type!r} must be local or remote")
        if node_type == "remote":
            base = required(Env.API_URL)
        else:
            base = env.get("LOCAL_API_URL", "").strip() or DEFAULT_LOCAL_API_URL
        if not base.startswith(("http://", "https://")):
            variable = "API_URL" if node_type == "remote" else "LOCAL_API_URL"
            raise SettingsError(f"{variable}={endpoints.redact(base)!r} is not an http(s) URL")
        api_key = env.get(Env.API_KEY, "")
        if api_key and "@" in base.split("://", 1)[1].split("/", 1)[0]:
            raise SettingsError("API_URL carries user:password@ and API_KEY is set too; give the upstream one of them")
        allowed = endpoints.parse_list(env.get(Env.ANSWER_ENDPOINTS, ""))
        try:
            endpoints.Policy(allowed)
        except endpoints.EndpointRefused as exc:
            raise SettingsError(f"ANSWER_ENDPOINTS: {exc}") from None
        return cls(
            model_name=required(Env.MODEL_NAME),
            node_type=node_type,
            chat_url=openai_api.chat_url(base),
            api_key=api_key,
            max_process_num=int(number(Env.MAX_PROCESS_NUM, contract.DEFAULT_MAX_PROCESS_NUM, 1)),
            pulsar_url=env.get(Env.PULSAR_URL, "").strip() or contract.DEFAULT_PULSAR_URL,
            pulsar_token=env.get(Env.PULSAR_TOKEN, ""),
            res_topic=env.get(Env.RES_TOPIC_NAME, "").strip() or contract.DEFAULT_RES_TOPIC_NAME,
            aimodel_name=env.get(Env.AIMODEL_NAME, ""),
            aimodel_namespace=env.get(Env.AIMODEL_NAMESPACE, ""),
            upstream_timeout=number("UPSTREAM_TIMEOUT", 600.0, 1),
            shutdown_grace=number("SHUTDOWN_GRACE", 20.0, 0),
            answer_endpoints=tuple(allowed),
            max_message_bytes=int(number("MAX_MESSAGE_BYTES", DEFAULT_MAX_MESSAGE_BYTES, 1024)),
            max_redeliveries=int(number("MAX_REDELIVERIES", DEFAULT_MAX_REDELIVERIES, 1)),
            usage_publish_delay_ms=number("USAGE_PUBLISH_DELAY_MS", DEFAULT_USAGE_PUBLISH_DELAY_MS, 0),
        )
