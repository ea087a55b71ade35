# The AI Model Operator image.
#   docker build -t aimodel-operator:latest .     (or: make docker-build IMG=...)
# The worker test image has its own Dockerfile in worker/.

# --- builder: install the project and its pinned dependencies into a self-contained venv ---
# The base image by digest (the tag is for readers): a rebuild gets the same bytes. To move it,
# read the tag's current digest (`docker buildx imagetools inspect python:3.11-slim`) and replace
# it in the three Dockerfiles at once (a unit test holds them equal).
FROM python:3.11-slim@sha256:9c900dea9e8fb7e16277c179b555cc72d29a352dbc33cff48ad5a0412fd5bfc7 AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src
# The dependencies first, from the lock file, each checked against its hash (make lock writes it
# from pyproject.toml); then the package alone. A change to the code does not reinstall them.
# The build backend too (requirements/build.txt), so that no unchecked download runs at all.
COPY requirements/operator.txt requirements/build.txt ./requirements/
RUN pip install --no-cache-dir --require-hashes -r requirements/operator.txt -r requirements/build.txt
COPY pyproject.toml README.md ./
COPY src/ ./src/
RUN pip install --no-cache-dir --no-deps --no-build-isolation .

# --- final: the venv alone on a clean base, run as a non-root user ---
FROM python:3.11-slim@sha256:9c900dea9e8fb7e16277c179b555cc72d29a352dbc33cff48ad5a0412fd5bfc7

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
