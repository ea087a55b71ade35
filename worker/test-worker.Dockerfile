# The test worker: a stand-in AI model worker that reports errors on request.
# Build from the repository root:  docker build -f worker/test-worker.Dockerfile -t aimodel-test-worker .
# The base image by digest (the tag is for readers): a rebuild gets the same bytes. To move it,
# read the tag's current digest (`docker buildx imagetools inspect python:3.11-slim`) and replace
# it in the three Dockerfiles at once (a unit test holds them equal).
FROM python:3.11-slim@sha256:9c900dea9e8fb7e16277c179b555cc72d29a352dbc33cff48ad5a0412fd5bfc7

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONPATH=/app \
    PORT=8080

# A fixed numeric UID lets Kubernetes verify runAsNonRoot.
RUN useradd --no-log-init --uid 10001 --user-group --create-home worker

WORKDIR /app
# Standard library only: copying the SDK and the contract it shares with the operator is all the
# installing it needs.
COPY src/aimodel_contract /app/aimodel_contract
COPY src/aimodel_worker /app/aimodel_worker
COPY worker/test_worker.py /app/test_worker.py

USER 10001:10001
EXPOSE 8080
ENTRYPOINT ["python", "/app/test_worker.py"]
