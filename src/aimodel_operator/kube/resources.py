"""Where each kind lives in the REST API: the registry of the kinds the operator reads and writes."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

from aimodel_contract import GROUP, KIND, VERSION

from ..api import PLURAL


@dataclass(frozen=True)
class Resource:
    group: str
    version: str
    plural: str
    kind: str

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def discovery_path(self) -> str:
        return f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"

    def path(self, namespace: str | None = None, name: str | None = None, subresource: str | None = None) -> str:
        base = self.discovery_path
        if namespace:
            base += f"/namespaces/{segment(namespace)}"
        base += f"/{self.plural}"
        if name:
            base += f"/{segment(name)}"
        if subresource:
            base += f"/{subresource}"
        return base


def segment(value: str) -> str:
    """One path segment, every reserved character escaped: a name can never climb to another path."""
    if value in (".", ".."):
        raise ValueError(f"invalid name {value!r}")
    return quote(value, safe="")


def resource_of(path: str) -> str:
    """The resource (with subresource) a REST path addresses: /api/v1/namespaces/ns/events/x -> events."""
    parts = path.split("?")[0].strip("/").split("/")
    parts = parts[2:] if parts[0] == "api" else parts[3:]
    if len(parts) >= 2 and parts[0] == "namespaces":
        parts = parts[2:]
    return "/".join(parts[:1] + parts[2:3]) or "namespaces"


AIMODELS = Resource(GROUP, VERSION, PLURAL, KIND)
DEPLOYMENTS = Resource("apps", "v1", "deployments", "Deployment")
SERVICE_ACCOUNTS = Resource("", "v1", "serviceaccounts", "ServiceAccount")
ROLES = Resource("rbac.authorization.k8s.io", "v1", "roles", "Role")
ROLE_BINDINGS = Resource("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding")
SECRETS = Resource("", "v1", "secrets", "Secret")
EVENTS = Resource("", "v1", "events", "Event")
SCALED_OBJECTS = Resource("keda.sh", "v1alpha1", "scaledobjects", "ScaledObject")
TRIGGER_AUTHS = Resource("keda.sh", "v1alpha1", "triggerauthentications", "TriggerAuthentication")
REPLICA_SETS = Resource("apps", "v1", "replicasets", "ReplicaSet")
PODS = Resource("", "v1", "pods", "Pod")
LEASES = Resource("coordination.k8s.io", "v1", "leases", "Lease")
TOKEN_REVIEWS = Resource("authentication.k8s.io", "v1", "tokenreviews", "TokenReview")
ACCESS_REVIEWS = Resource("authorization.k8s.io", "v1", "subjectaccessreviews", "SubjectAccessReview")

# The children the operator applies, by kind.
BY_KIND = {
    r.kind: r for r in (DEPLOYMENTS, SERVICE_ACCOUNTS, ROLES, ROLE_BINDINGS, SECRETS, SCALED_OBJECTS, TRIGGER_AUTHS)
}
