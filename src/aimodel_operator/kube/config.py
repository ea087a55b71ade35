"""Where the operator's credentials come from."""

from __future__ import annotations

from aimodel_worker.credentials import Credentials, load_credentials


async def load_configuration() -> Credentials:
    """In-cluster credentials when running in a pod, else the usual kubeconfig (``$KUBECONFIG``,
    else ~/.kube/config). Exec and auth-provider plugins are not supported: use a token (e.g.
    ``kubectl create token``) or a client certificate. A missing or broken configuration raises
    ``ConfigError``, said once at start and not retried."""
    return load_credentials()
