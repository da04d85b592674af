# Adapter Factory GPU worker bootstrap: the body of an EC2 instance's user data or a Compute
# Engine instance's startup-script. The launcher (resources/remote_compute.py) puts a shebang and
# the exports above this body: the Pipes context and message channel, the stage spec
# (FACTORY_STAGE) and FACTORY_WORKER_COMMAND (by default a `docker run` of
# infra/docker/worker.Dockerfile's image). Whatever happens the instance powers off at the end
# (EC2 launches it to terminate on shutdown); the launcher deletes it too when the run ends,
# fails or is cancelled.
set -uo pipefail
trap '${FACTORY_POWEROFF:-shutdown -h now}' EXIT
exec > >(tee -a "${FACTORY_LOG:-/var/log/adapter-factory-worker.log}") 2>&1
if [[ -n "${FACTORY_HMAC_SECRET:-}" ]]; then
  # Compute Engine: the staging bucket is reached through Cloud Storage's S3-compatible XML API
  # with an HMAC key kept in Secret Manager as "<access id>:<secret>", never in the metadata.
  hmac="$(gcloud secrets versions access latest --secret="$FACTORY_HMAC_SECRET")" || exit 1
  export AWS_ACCESS_KEY_ID="${hmac%%:*}" AWS_SECRET_ACCESS_KEY="${hmac#*:}"
fi
echo "[bootstrap] $(date -Is) on $(hostname): $FACTORY_WORKER_COMMAND -m worker.remote"
$FACTORY_WORKER_COMMAND -m worker.remote
code=$?
echo "[bootstrap] $(date -Is) worker exited with $code"
