# The AI Model Operator image.
#   docker build -t aimodel-operator:latest .     (or: make docker-build IMG=...)
# The worker test image has its own Dockerfile in worker/.

# --- builder: install the project and its pinned dependencies into a self-contained venv ---
FROM python:3.11-slim AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src
# Only what the package build reads: a change to tests or docs does not rebuild this layer.
COPY pyproject.toml README.md ./
COPY src/ ./src/
RUN pip install --no-cache-dir .

# --- final: the venv alone on a clean base, run as a non-root user ---
FROM python:3.11-slim

# A fixed numeric UID lets Kubernetes verify runAsNonRoot (the manager Deployment sets runAsUser 65532).
RUN useradd --no-log-init --system --uid 65532 --user-group \
        --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin nonroot

COPY --from=builder /opt/venv /opt/venv

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

USER 65532:65532
# 8080: Prometheus /metrics, 8081: /healthz
EXPOSE 8080 8081
ENTRYPOINT ["aimodel-operator"]
CMD ["run"]
