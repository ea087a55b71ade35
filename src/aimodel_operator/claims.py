"""Who holds a model name: the first AIModel to name it, by creation time, then uid.

The queue is shared by the whole cluster (the topic is ``model-<model>``), so a model name
belongs to one namespace: the holder's. AIModels of that namespace may share it; one in another
namespace gets no workers and no queue credential until the name is free (SPEC §9). Pure: the
controller gives the namesakes from its cache.
"""

from __future__ import annotations

from collections.abc import Iterable

from . import status as status_mod
from .objects import Manifest
from .status import READY

MODEL_NAME_IN_USE = "ModelNameInUse"


def _age(model: Manifest) -> tuple[str, str]:
    meta = model["metadata"]
    # RFC 3339 in UTC with a fixed layout: the strings sort as the times do.
    return meta.get("creationTimestamp") or "", meta.get("uid") or ""


def holder(namesakes: Iterable[Manifest]) -> Manifest | None:
    """The AIModel that holds the name the ``namesakes`` share (None when there are none).

    One being deleted still holds it: its workers run until it is gone.
    """
    return min(namesakes, key=_age, default=None)


def holder_namespace(namesakes: Iterable[Manifest]) -> str | None:
    first = holder(namesakes)
    return None if first is None else first["metadata"]["namespace"]


def in_use(model: Manifest, holder_ns: str | None) -> status_mod.Condition | None:
    """Ready=False ModelNameInUse when another namespace holds the model's name, else None."""
    namespace = model["metadata"]["namespace"]
    if holder_ns is None or holder_ns == namespace:
        return None
    name = (model.get("spec") or {}).get("model", "")
    return status_mod.Condition(
        READY,
        False,
        MODEL_NAME_IN_USE,
        f'spec.model "{name}" is in use by namespace {holder_ns}, where an AIModel named it first: '
        f"this AIModel runs no workers and gets no queue credential until that namespace no longer uses it",
    )
