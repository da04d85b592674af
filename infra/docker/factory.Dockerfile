# The control plane's image: the Dagster code location (the chart's user code deployment and
# every run pod it launches), and the gateway. It holds the environments the control plane runs
# (infra/setup-envs.sh): `factory` (Dagster, Chroma client, the gateway) and `train` (the local
# worker: validation, offline evaluation, merges; training itself runs on GPU Jobs, compute.kind
# k8s, in infra/docker/worker.Dockerfile's image). No vLLM: replicas run the replica image.
#   docker build -f infra/docker/factory.Dockerfile -t <registry>/adapter-factory:<tag> .
# See docs/operations.md "Running on Kubernetes". Not built in CI (no Docker daemon, no registry).
FROM python:3.11-slim-bookworm

ENV PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 \
    PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu
RUN apt-get update && apt-get install -y --no-install-recommends build-essential git && \
    rm -rf /var/lib/apt/lists/*

WORKDIR /opt/adapter-factory
COPY . .
RUN ./infra/setup-envs.sh factory && ./infra/setup-envs.sh train
ENV PATH=/opt/adapter-factory/.venvs/factory/bin:$PATH \
    FACTORY_CONFIG=/etc/adapter-factory/factory.yaml
# the chart runs `dagster code-server start` with its codeServerArgs (reloadable, so Studio
# trainings appear); the gateway's Deployment runs `factory-gateway ... serve`
CMD ["dagster", "code-server", "start", "--module-name", "pipelines.definitions", \
     "--host", "0.0.0.0", "--port", "3030"]
