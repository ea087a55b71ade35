"""The operator's own configuration, read once from the environment at start."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from aimodel_contract import DEFAULT_PULSAR_URL, DEFAULT_RES_TOPIC_NAME, Env
from aimodel_worker.runner import endpoints

FIELD_MANAGER = "aimodel-operator"
COMPONENT = "aimodel-operator"


@dataclass(frozen=True)
class Settings:
    pulsar_admin_url: str = ""
    pulsar_url: str = DEFAULT_PULSAR_URL
    pulsar_token: str = ""
    res_topic_name: str = DEFAULT_RES_TOPIC_NAME
    # Where workers may send answers (the gateway's answer URLs), passed as ANSWER_ENDPOINTS;
    # empty: the worker's own default (any endpoint but loopback and link-local).
    answer_endpoints: str = ""
    # A token per model (the operator signs and grants them, pulsar_auth): workers read theirs
    # from a mounted file, KEDA gets a stats-only one. Off: the one pulsar_token above, if any.
    per_model_tokens: bool = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        return cls(
            pulsar_admin_url=env.get("PULSAR_ADMIN_URL", ""),
            pulsar_url=env.get(Env.PULSAR_URL) or DEFAULT_PULSAR_URL,
            pulsar_token=env.get(Env.PULSAR_TOKEN, ""),
            res_topic_name=env.get(Env.RES_TOPIC_NAME) or DEFAULT_RES_TOPIC_NAME,
            answer_endpoints=" ".join(endpoints.parse_list(env.get(Env.ANSWER_ENDPOINTS, ""))),
            per_model_tokens=bool(env.get("PULSAR_ADMIN_TOKEN") and env.get("PULSAR_TOKEN_SIGNING_KEY_FILE")),
        )
