"""A model's own Pulsar roles, grants and tokens (pulsar_auth/credentials.py): what each role is
granted, and when a token held in the model's Secret is kept or replaced. The broker enforcing
them, and the admin calls, are tests/e2e/test_36_pulsar_tenancy.py."""

from __future__ import annotations

import base64

from aimodel_operator.pulsar_auth import credentials, tokens
from aimodel_operator.pulsar_auth.credentials import Credentials

KEY = bytes(range(32))
TTL = 3000.0


def model(name: str = "chat", namespace: str = "team-a", spec_model: str = "gpt-4o") -> dict:
    return {
        "apiVersion": "model.youxam.com/v1alpha1",
        "kind": "AIModel",
        "metadata": {"name": name, "namespace": namespace, "uid": "u1"},
        "spec": {"type": "remote", "model": spec_model},
    }


def secret_with(worker: str, stats: str) -> dict:
    enc = lambda s: base64.b64encode(s.encode()).decode()  # noqa: E731
    return {"data": {"PULSAR_TOKEN": enc(worker), "PULSAR_STATS_TOKEN": enc(stats)}}


def creds() -> Credentials:
    return Credentials(admin=None, key=KEY, ttl=TTL, res_topic="res-topic")  # type: ignore[arg-type]


def test_each_role_is_granted_only_what_it_needs():
    p = "persistent://public/default/"
    assert credentials.wanted(model(), "res-topic") == {
        (f"{p}model-gpt-4o", "aimodel:team-a:chat"): frozenset({"consume"}),
        (f"{p}model-gpt-4o-DLQ", "aimodel:team-a:chat"): frozenset({"produce", "consume"}),
        (f"{p}res-topic", "aimodel:team-a:chat"): frozenset({"produce"}),
        (f"{p}model-gpt-4o", "aimodel-stats:team-a:chat"): frozenset({"consume"}),
    }
    # A result topic given in full is used as it is.
    wanted = credentials.wanted(model(), "persistent://billing/usage/results")
    assert ("persistent://billing/usage/results", "aimodel:team-a:chat") in wanted


def test_new_tokens_carry_the_models_roles_and_the_ttl():
    issued = creds().issue(model(), None, now=1000)
    assert tokens.read(issued.tokens.worker, KEY) == tokens.Claims("aimodel:team-a:chat", 4000)
    assert tokens.read(issued.tokens.stats, KEY) == tokens.Claims("aimodel-stats:team-a:chat", 4000)
    # Renewed once a third of the life is left.
    assert issued.renew_in == 2000


def test_tokens_in_the_secret_are_kept_while_good_and_replaced_in_their_last_third():
    first = creds().issue(model(), None, now=1000)
    secret = secret_with(first.tokens.worker, first.tokens.stats)
    kept = creds().issue(model(), secret, now=2500)
    assert kept.tokens == first.tokens
    assert kept.renew_in == 500  # due at 3000 (expiry 4000 less a third of 3000)
    renewed = creds().issue(model(), secret, now=3001)
    assert renewed.tokens.worker != first.tokens.worker and renewed.tokens.stats != first.tokens.stats
    assert tokens.read(renewed.tokens.worker, KEY) == tokens.Claims("aimodel:team-a:chat", 6001)


def test_a_token_of_another_role_or_key_or_a_damaged_one_is_never_kept():
    other_model = creds().issue(model(name="other"), None, now=1000).tokens
    foreign_key = Credentials(None, bytes(32), TTL, "res-topic").issue(model(), None, now=1000).tokens  # type: ignore[arg-type]
    for secret in (
        secret_with(other_model.worker, other_model.stats),
        secret_with(foreign_key.worker, foreign_key.stats),
        {"data": {"PULSAR_TOKEN": "%%% not base64", "PULSAR_STATS_TOKEN": 7}},
        {"data": None},
    ):
        issued = creds().issue(model(), secret, now=1000)
        assert tokens.read(issued.tokens.worker, KEY) == tokens.Claims("aimodel:team-a:chat", 4000)
        assert tokens.read(issued.tokens.stats, KEY) == tokens.Claims("aimodel-stats:team-a:chat", 4000)
