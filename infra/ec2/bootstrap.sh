# Adapter Factory GPU worker bootstrap: the body of an EC2 instance's user data.
# The launcher (resources/ec2_compute.py) puts a shebang and the exports above this body: the
# Pipes context and message channel, the stage spec (FACTORY_STAGE) and FACTORY_WORKER_COMMAND
# (by default a `docker run` of infra/docker/worker.Dockerfile's image). Whatever happens the
# instance powers off at the end, and since it is launched with
# InstanceInitiatedShutdownBehavior=terminate it is then gone; the launcher terminates it too
# when the run ends, fails or is cancelled.
set -uo pipefail
trap '${FACTORY_POWEROFF:-shutdown -h now}' EXIT
exec > >(tee -a "${FACTORY_LOG:-/var/log/adapter-factory-worker.log}") 2>&1
echo "[bootstrap] $(date -Is) on $(hostname): $FACTORY_WORKER_COMMAND -m worker.remote"
$FACTORY_WORKER_COMMAND -m worker.remote
code=$?
echo "[bootstrap] $(date -Is) worker exited with $code"
