"""The API client, in layers (kopf's ``_cogs/clients`` and httpx's transport split):

- ``resources``: where each kind lives in the REST API (the registry);
- ``errors``: refusals as types (``NotFound``, ``Conflict``, ``Gone``, ...);
- ``transport``: HTTP, pools, credentials, keep-warm, the write fence, metrics;
- ``lines``: the JSON-lines reader under watches;
- ``client``: the verbs over a transport (``Kube``);
- ``config``: where the credentials come from.

Modules above import from here, never from the layers' files.
"""

from .client import METADATA, METADATA_LIST, Kube, sleep_backoff
from .config import load_configuration
from .errors import (
    ApiError,
    BadRequest,
    Conflict,
    Forbidden,
    Gone,
    NotFound,
    NotLeading,
    Unprocessable,
    WatchIdle,
    describe,
)
from .resources import (
    ACCESS_REVIEWS,
    AIMODELS,
    BY_KIND,
    DEPLOYMENTS,
    EVENTS,
    LEASES,
    PODS,
    REPLICA_SETS,
    ROLE_BINDINGS,
    ROLES,
    SCALED_OBJECTS,
    SECRETS,
    SERVICE_ACCOUNTS,
    TOKEN_REVIEWS,
    TRIGGER_AUTHS,
    Resource,
    resource_of,
    segment,
)
from .transport import KEEP_WARM, KEEPALIVE, Answer, HttpTransport, Stream, Transport

__all__ = [
    "ACCESS_REVIEWS",
    "AIMODELS",
    "BY_KIND",
    "DEPLOYMENTS",
    "EVENTS",
    "KEEPALIVE",
    "KEEP_WARM",
    "LEASES",
    "METADATA",
    "METADATA_LIST",
    "PODS",
    "REPLICA_SETS",
    "ROLES",
    "ROLE_BINDINGS",
    "SCALED_OBJECTS",
    "SECRETS",
    "SERVICE_ACCOUNTS",
    "TOKEN_REVIEWS",
    "TRIGGER_AUTHS",
    "Answer",
    "ApiError",
    "BadRequest",
    "Conflict",
    "Forbidden",
    "Gone",
    "HttpTransport",
    "Kube",
    "NotFound",
    "NotLeading",
    "Resource",
    "Stream",
    "Transport",
    "Unprocessable",
    "WatchIdle",
    "describe",
    "load_configuration",
    "resource_of",
    "segment",
    "sleep_backoff",
]
