"""Find how to reach the API server: in-cluster service account or a kubeconfig."""

import base64
import json
import os
import ssl
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


@dataclass(frozen=True)
class Credentials:
    """Where the API server is and how to authenticate to it."""

    server: str
    ca_file: str | None = None
    ca_data: str | None = None
    insecure: bool = False
    token: str | None = field(default=None, repr=False)
    # Read on every request: projected service account tokens are rotated by the kubelet.
    token_file: str | None = None
    cert_file: str | None = None
    cert_data: bytes | None = field(default=None, repr=False)
    key_file: str | None = None
    key_data: bytes | None = field(default=None, repr=False)
    # The name the server's certificate is checked against (and sent as SNI), when not the host.
    tls_server_name: str | None = None
    # An http(s) proxy the API server is reached through.
    proxy_url: str | None = None

    def bearer_token(self) -> str | None:
        if self.token_file:
            try:
                return Path(self.token_file).read_text().strip()
            except OSError as exc:
                raise ConfigError(f"cannot read the token file {self.token_file}: {exc}") from exc
        return self.token

    def ssl_context(self) -> ssl.SSLContext:
        """TLS settings for ``https`` servers, client certificate included."""
        if self.insecure:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        else:
            try:
                ctx = ssl.create_default_context(cafile=self.ca_file, cadata=self.ca_data)
            except (OSError, ssl.SSLError) as exc:
                raise ConfigError(f"cannot load the API server's CA certificate: {exc}") from exc
        if self.cert_file or self.cert_data:
            load_client_certificate(ctx, self)
        return ctx


def _write_private(directory: str, name: str, data: bytes) -> str:
    path = os.path.join(directory, name)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return path


def load_client_certificate(ctx: ssl.SSLContext, creds: Credentials) -> None:
    """Load the client certificate and key into ``ctx``.

    ``load_cert_chain`` only reads files, so inline data goes to private
    temporary files that are removed as soon as it has read them.
    """
    with tempfile.TemporaryDirectory(prefix="aimodel-worker-") as tmp:
        cert, key = creds.cert_file, creds.key_file
        if creds.cert_data:
            cert = _write_private(tmp, "client.crt", creds.cert_data)
        if creds.key_data:
            key = _write_private(tmp, "client.key", creds.key_data)
        if not cert:
            raise ConfigError("a client key is configured without a client certificate")
        try:
            ctx.load_cert_chain(cert, key)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"cannot load the client certificate: {exc}") from exc


def in_cluster_credentials(
    env: Mapping[str, str] = os.environ, sa_dir: Path = SERVICE_ACCOUNT_DIR
) -> Credentials | None:
    """The pod's service account, or None when not running in a pod."""
    host = env.get("KUBERNETES_SERVICE_HOST")
    port = env.get("KUBERNETES_SERVICE_PORT")
    token = sa_dir / "token"
    if not (host and port and token.is_file()):
        return None
    if ":" in host:
        host = f"[{host}]"
    ca = sa_dir / "ca.crt"
    return Credentials(
        server=f"https://{host}:{port}",
        ca_file=str(ca) if ca.is_file() else None,
        token_file=str(token),
    )


def _parse_document(text: str, path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(text)
    except ValueError:
        try:
            import yaml  # optional: only YAML kubeconfigs need it
        except ImportError:
            raise ConfigError(f"kubeconfig {path} is not JSON, and reading YAML needs PyYAML") from None
        try:
            doc = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"kubeconfig {path} is not valid YAML: {exc}") from exc
    if not isinstance(doc, dict):
        raise ConfigError(f"kubeconfig {path} is not a mapping")
    return doc


def _named(doc: dict[str, Any], section: str, key: str, name: str, path: Path) -> tuple[dict[str, Any], Path]:
    """The entry called ``name`` in ``section``, and the file it came from (relative paths in it
    are resolved against that file's directory)."""
    for entry in doc.get(section) or []:
        if isinstance(entry, dict) and entry.get("name") == name:
            return entry.get(key) or {}, entry.get("__file__", path)
    raise ConfigError(f"kubeconfig {path} has no {key} named {name!r}")


def merge_kubeconfigs(paths: list[Path]) -> tuple[dict[str, Any], Path]:
    """``$KUBECONFIG`` as kubectl reads it: the files in order, missing ones skipped; the first file
    to set ``current-context`` wins, and of entries with the same name, the first one wins."""
    merged: dict[str, Any] = {"clusters": [], "users": [], "contexts": []}
    seen: dict[str, set[str]] = {section: set() for section in merged}
    read: list[Path] = []
    for path in paths:
        try:
            text = path.read_text()
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise ConfigError(f"cannot read kubeconfig {path}: {exc}") from exc
        doc = _parse_document(text, path)
        read.append(path)
        if not merged.get("current-context") and doc.get("current-context"):
            merged["current-context"] = doc["current-context"]
        for section in merged.keys() - {"current-context"}:
            entries = doc.get(section) or []
            if not isinstance(entries, list):
                raise ConfigError(f"kubeconfig {path}: {section} is not a list")
            for entry in entries:
                name = entry.get("name") if isinstance(entry, dict) else None
                if isinstance(name, str) and name not in seen[section]:
                    seen[section].add(name)
                    merged[section].append({**entry, "__file__": path})
    if not read:
        raise ConfigError("none of the kubeconfig files in $KUBECONFIG exists: " + ", ".join(map(str, paths)))
    return merged, read[0]


def _flag(section: dict[str, Any], name: str, where: str) -> bool:
    value = section.get(name, False)
    if not isinstance(value, bool):
        raise ConfigError(f"{where}: {name} must be true or false, not {value!r}")
    return value


def kubeconfig_credentials(path: Path, context: str | None = None) -> Credentials:
    """Credentials of ``context`` (default: the current context) in the kubeconfig at ``path``."""
    try:
        doc = _parse_document(path.read_text(), path)
    except OSError as exc:
        raise ConfigError(f"cannot read kubeconfig {path}: {exc}") from exc
    return credentials_of(doc, path, context)


def credentials_of(doc: dict[str, Any], path: Path, context: str | None = None) -> Credentials:
    """Credentials of ``context`` in a (merged) kubeconfig document, with client-go's rules."""
    context = context or doc.get("current-context")
    if not context:
        raise ConfigError(f"kubeconfig {path} has no current-context")
    ctx, _ = _named(doc, "contexts", "context", context, path)
    cluster, cluster_file = _named(doc, "clusters", "cluster", ctx.get("cluster", ""), path)
    user, user_file = _named(doc, "users", "user", ctx["user"], path) if ctx.get("user") else ({}, path)
    where = f"kubeconfig {cluster_file}: cluster {ctx.get('cluster')!r}"
    if not cluster.get("server"):
        raise ConfigError(f"{where} has no server")
    plugin = "exec" if "exec" in user else "auth-provider" if "auth-provider" in user else None
    if plugin and not any(user.get(k) for k in ("token", "tokenFile", "client-certificate", "client-certificate-data")):
        raise ConfigError(
            f"kubeconfig {user_file}: user {ctx.get('user')!r} needs an {plugin} plugin, which is not supported"
        )

    def file(value: str | None, origin: Path) -> str | None:
        # kubectl resolves relative paths against the directory of the file that holds them.
        return str(origin.parent / value) if value else None

    def data(value: str | None) -> bytes | None:
        try:
            return base64.b64decode(value, validate=True) if value else None
        except ValueError as exc:
            raise ConfigError(f"kubeconfig {path} holds invalid base64 data: {exc}") from exc

    insecure = _flag(cluster, "insecure-skip-tls-verify", where)
    ca_data = data(cluster.get("certificate-authority-data"))
    if insecure and (ca_data or cluster.get("certificate-authority")):
        # client-go: "specifying a root certificates file with the insecure flag is not allowed"
        raise ConfigError(f"{where}: a certificate authority together with insecure-skip-tls-verify is not allowed")
    if ca_data is not None and b"-----BEGIN CERTIFICATE-----" not in ca_data:
        raise ConfigError(f"{where}: certificate-authority-data is not a PEM certificate (DER is not accepted)")
    proxy = cluster.get("proxy-url") or None
    if proxy is not None and not (isinstance(proxy, str) and proxy.startswith(("http://", "https://"))):
        raise ConfigError(f"{where}: proxy-url {proxy!r} is not an http(s) proxy (socks5 is not supported)")
    server_name = cluster.get("tls-server-name") or None
    if server_name is not None and not isinstance(server_name, str):
        raise ConfigError(f"{where}: tls-server-name must be a string")
    return Credentials(
        server=cluster["server"].rstrip("/"),
        ca_file=file(cluster.get("certificate-authority"), cluster_file),
        ca_data=ca_data.decode("ascii", "replace") if ca_data else None,
        insecure=insecure,
        token=user.get("token"),
        token_file=file(user.get("tokenFile"), user_file),
        cert_file=file(user.get("client-certificate"), user_file),
        cert_data=data(user.get("client-certificate-data")),
        key_file=file(user.get("client-key"), user_file),
        key_data=data(user.get("client-key-data")),
        tls_server_name=server_name,
        proxy_url=proxy,
    )


def load_credentials(env: Mapping[str, str] = os.environ, sa_dir: Path = SERVICE_ACCOUNT_DIR) -> Credentials:
    """In-cluster credentials if present, else ``$KUBECONFIG`` (its files merged as kubectl does),
    else ``~/.kube/config``."""
    creds = in_cluster_credentials(env, sa_dir)
    if creds:
        return creds
    paths = [p for p in env.get("KUBECONFIG", "").split(os.pathsep) if p]
    if paths:
        doc, first = merge_kubeconfigs([Path(p).expanduser() for p in paths])
        return credentials_of(doc, first)
    default = Path(env.get("HOME") or Path.home()) / ".kube" / "config"
    if default.is_file():
        return kubeconfig_credentials(default)
    raise ConfigError(
        "no Kubernetes credentials found: looked for a service account "
        f"(KUBERNETES_SERVICE_HOST, KUBERNETES_SERVICE_PORT and {sa_dir / 'token'}), "
        f"a kubeconfig named by $KUBECONFIG, and {default}"
    )
