"""Helm, the package manager the chart in charts/ is tested with, built from its Go module.

helm.sh/helm/v4 has no ``replace`` directives, so ``go install`` builds it as
published; the binary lands in ``<cache>/helm-<version>/bin/helm``.
"""

from __future__ import annotations

from pathlib import Path

from . import gobuild, versions
from .base import log

MODULE = "helm.sh/helm/v4"


def helm_path() -> Path:
    return gobuild.tool_dir("helm", versions.HELM) / "bin" / "helm"


def build() -> Path:
    """The helm binary (built on first use, a few minutes on two cores)."""
    binary = helm_path()
    if binary.exists():
        return binary
    dest = binary.parent
    log(f"building helm {versions.HELM} (first use only)")
    tmp = gobuild.staging_dir(dest)
    gobuild.run_go(
        ["install", "-v", "-trimpath", "-ldflags", "-s -w", f"{MODULE}/cmd/helm@{versions.HELM}"],
        dest.parent,
        "helm",
        GOBIN=str(tmp),
    )
    gobuild.publish(dest, tmp)
    return binary
