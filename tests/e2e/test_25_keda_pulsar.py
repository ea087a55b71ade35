"""KEDA reads a real Pulsar backlog through the ScaledObject the operator wrote."""

from __future__ import annotations

from kube_helpers import wait_for

TOPIC = "persistent/public/default/model-TinyLlama-1.1B"
SUBSCRIPTION = "model-TinyLlama-1.1B-subscription"


def test_backlog_on_the_model_topic_activates_the_scaled_object(operator_process, keda, pulsar, pulsar_token, k):
    from devcluster import pulsar as pulsar_mod

    # What the API gateway and the workers do: the workers' shared subscription, requests queued on model-<model>.
    pulsar_mod.publish(pulsar, pulsar_token, TOPIC, SUBSCRIPTION, 5)
    assert pulsar_mod.backlog(pulsar, pulsar_token, TOPIC, SUBSCRIPTION) == 5
    operator_process.stop()
    # Pulsar refuses anonymous clients: KEDA reads the backlog with the token the operator gives
    # the TriggerAuthentication.
    operator_process.start({"PULSAR_ADMIN_URL": pulsar, "PULSAR_TOKEN": pulsar_token})
    k.apply(
        {
            "apiVersion": "model.youxam.com/v1alpha1",
            "kind": "AIModel",
            "metadata": {"name": "ai-model-sample"},
            "spec": {"type": "local", "model": "TinyLlama-1.1B", "msgBacklogThreshold": 2, "image": "user/image:tag"},
        }
    )

    def conditions():
        so = k.get("scaledobject", "ai-model-sample-scaledobject") or {}
        return {c["type"]: c["status"] for c in (so.get("status") or {}).get("conditions", [])}

    # KEDA asks Pulsar's admin API for the subscription's backlog at its polling interval (30 s).
    wait_for("KEDA to find the backlog (Active=True)", lambda: conditions().get("Active") == "True", timeout=90)
    assert conditions().get("Ready") == "True"
    wait_for(
        "the AIModel to show KEDA's view",
        lambda: any(
            c["type"] == "Autoscaling" and c["status"] == "True" and "active=True" in c["message"]
            for c in (k.get("aimodel", "ai-model-sample").get("status") or {}).get("conditions", [])
        ),
    )
