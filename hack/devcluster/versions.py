"""The one place where the local cluster's component versions are pinned."""

KUBERNETES = "v1.35.8"
# k8s.io/kubernetes replaces its staging modules (k8s.io/api, ...) with local
# paths; the wrapper module points each of them at this published version.
KUBERNETES_STAGING = "v0.35.8"
ETCD = "v3.6.16"
KWOK = "v0.7.0"
KEDA = "v2.20.2"
# From Maven Central; 4.0.8 lacks two of its own artifacts there.
PULSAR = "4.0.7"
# Tests the chart in charts/; no replace directives, built as published.
HELM = "v4.3.1"
