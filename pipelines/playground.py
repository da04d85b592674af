"""The demo's way into the playground and the Studio: a `demo` project granted every model the
deployments serve and every corpus, keeping the chats sent with `store: true`, a fresh key for
it (the previous demo's key revoked), and the gateway and Dagster's webserver and daemon running
in the background (left running like the vLLM servers; `factory stop` stops them). The demo then
closes the loop once: a kept reply rated, one corrected, and a Studio data file made of them; and
watches the endpoint: the adapter asked its own kind of prompts, then another domain's, the
monitor run after each (its drift check passes, then fails, and what it triggers follows)."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from config.schema import FactoryConfig

PROJECT = "demo"


def provision(config: FactoryConfig) -> str:
    """Grants for the demo project (created once) and a new key, the earlier one revoked;
    returns the key's secret."""
    from gateway.db import connect, make_engine, session_factory
    from gateway.migrate import upgrade
    from gateway.tenancy import Tenancy

    s = config.gateway_settings
    upgrade(connect(s.database_url))  # `factory-gateway db upgrade`, before the gateway starts
    tenancy = Tenancy(session_factory(make_engine(s.database_url)), s.default_rpm,
                      s.default_tpm, default_quota=s.project_quota)
    if not tenancy.has_project(PROJECT):  # else made by an earlier demo: grants refreshed below
        tenancy.create_project(PROJECT, owner=PROJECT)
    granted = {(g["kind"], g["name"]) for g in tenancy.grants(PROJECT)}
    models = {name for d in config.deployments.values() for name in (d.base_model, *d.adapters)}
    wanted = {("model", m) for m in models | {s.embedding_model_name}} | {
        ("collection", c) for c in config.corpora}
    for kind, name in sorted(wanted - granted):
        tenancy.grant(PROJECT, name, kind=kind)
    tenancy.set_capture(PROJECT, "request", scrub_pii=True)
    for key in tenancy.list_keys(PROJECT):  # one live demo key: reruns never pile keys up
        if not key["revoked"]:
            tenancy.revoke_key(key["id"])
    return tenancy.create_key(PROJECT, PROJECT, name=f"demo-{int(time.time())}")["key"]


def transcribe_sample(config: FactoryConfig, url: str, key: str) -> str | None:
    """The first recording of a speech deployment's evaluation folder, transcribed through the
    gateway with the demo key, and its word error rate against the transcript beside it; None
    without one."""
    from openai import OpenAI

    from assets.speech_evaluation import word_error_rate
    from resources.speech_client import AUDIO_SUFFIXES

    for name in config.speech_deployments():
        spec = config.deployments[name]
        folder = spec.transcription_eval.recordings if spec.transcription_eval else None
        files = sorted(p for p in config.resolve(folder).iterdir()
                       if p.suffix in AUDIO_SUFFIXES) if folder else []
        if files:
            heard = OpenAI(base_url=f"{url}/v1", api_key=key).audio.transcriptions.create(
                model=spec.base_model, file=files[0], language="en").text
            said = files[0].with_suffix(".txt").read_text()
            return (f"{files[0].name} via {url}/v1/audio/transcriptions ({spec.base_model}):\n"
                    f"  heard: {heard.strip()}\n  said:  {said.strip()}\n"
                    f"  word error rate {word_error_rate([said], [heard]):.3f}")
    return None


def close_the_loop(config: FactoryConfig, url: str, key: str) -> str | None:
    """Two demo questions asked of the first served adapter and kept; the first reply rated
    (good when it holds the right answer, else bad), the second corrected with the worked
    answer; then the Studio's "Make a dataset from feedback". What happened, for the summary;
    None without a served adapter."""
    from ingest.demo_data import math_problems

    served = [a for d in config.deployments.values() for a in d.adapters]
    if not served:
        return None
    model = served[0]
    headers = {"authorization": f"Bearer {key}"}
    lines = []
    with httpx.Client(base_url=url, headers=headers, timeout=300) as http:
        asked = []
        for row in math_problems.generate(2, seed=4242):
            messages = row["messages"][:-1]  # type: ignore[index]
            reply = http.post("/v1/chat/completions", json={
                "model": model, "messages": messages, "max_tokens": 96, "temperature": 0,
                "store": True, "metadata": {"source": "factory demo"}})
            reply.raise_for_status()
            asked.append((reply.json(), row))
        (first, row1), (second, row2) = asked
        text = first["choices"][0]["message"]["content"]
        good = f"#### {row1['answer']}" in text
        feedback = [(first["id"], {"rating": "up" if good else "down"}),
                    (second["id"], {"correction": row2["messages"][-1]["content"]})]  # type: ignore[index]
        for completion, body in feedback:
            http.post(f"/v1/chat/completions/{completion}/feedback", json=body).raise_for_status()
        question = row1["messages"][1]["content"]  # type: ignore[index]
        lines.append(f"{model} answered {question[:60]!r}... and one more; reply "
                     f"{first['id']} rated {'good' if good else 'bad'}, {second['id']} "
                     "corrected with the worked answer")
        made = http.post("/studio/api/datasets/from-feedback", json={"kind": "feedback"})
        made.raise_for_status()
        report = made.json()["report"]
        lines.append(f"Studio data file {made.json()['label']} made of them: "
                     f"{report['rows_kept']} of {report['rows_in']} rated replies kept "
                     "(train on it in the Studio; GET /v1/chat/completions lists the chats)")
    return "\n  ".join(lines)


def admin_token(config: FactoryConfig) -> str:
    """The gateway's admin token, which the monitor needs to read the gateway: the environment's
    (gateway.admin_token_env), else one made once and kept owner-only in the work dir. Set in
    this process's environment, so the gateway and Dagster the demo starts share it."""
    s = config.gateway_settings
    if s.admin_token:
        return s.admin_token
    path = config.work_dir / "gateway-admin-token"
    path.parent.mkdir(parents=True, exist_ok=True)
    fresh = path.with_name(f".{path.name}.{os.getpid()}")
    with os.fdopen(os.open(fresh, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
        f.write(secrets.token_urlsafe(32))
    try:
        os.link(fresh, path)  # whole or not at all; an earlier demo's token wins
    except FileExistsError:
        pass
    finally:
        fresh.unlink()
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd) as f:
        if os.fstat(fd).st_uid != os.getuid() or os.fstat(fd).st_mode & 0o077:
            raise RuntimeError(f"{path} must be this user's and readable by no one else "
                               f"(chmod 600 {path}), or set {s.admin_token_env}")
        os.environ[s.admin_token_env] = f.read().strip()
    return os.environ[s.admin_token_env]


def watch(config: FactoryConfig, url: str, key: str, shifted: list[str], asked: int = 40
          ) -> list[dict[str, Any]] | None:
    """The first monitored deployment's first adapter asked `asked` prompts of its own test
    split, then `asked` of `shifted` (another domain), all kept; its monitor run after each.
    Per phase: what was sent, the monitor's totals, its checks and its drift; None without a
    monitored adapter. The second run's failing drift check alerts once and, as the monitor
    declares, re-evaluates or retrains through the daemon's automation."""
    from assets.monitors import monitor_key, training_prompts
    from pipelines.graph import resources_for
    from pipelines.runs import failed_steps, materialize

    watched = [(name, spec.adapters[0]) for name, spec in config.deployments.items()
               if spec.monitor and spec.adapters and spec.adapters[0] in config.adapters]
    if not watched:
        return None
    deployment, adapter = watched[0]
    own = training_prompts(resources_for(config)["store"], config, adapter, "test")[:asked]
    phases = []
    with httpx.Client(base_url=url, headers={"authorization": f"Bearer {key}"},
                      timeout=300) as http:
        def ask(prompt: str) -> None:
            http.post("/v1/chat/completions", json={
                "model": adapter, "messages": [{"role": "user", "content": prompt}],
                "max_tokens": 8, "temperature": 0, "store": True,
                "metadata": {"source": "factory demo monitor"}}).raise_for_status()

        for label, prompts in (("its own test prompts", own),
                               ("another domain's prompts", shifted[:asked])):
            with ThreadPoolExecutor(8) as pool:  # vLLM batches them
                list(pool.map(ask, prompts))
            result: Any = materialize(config, [f"monitor/{deployment}"])
            if not result.success:
                raise RuntimeError(f"monitor/{deployment} failed: "
                                   + "; ".join(failed_steps(result)[0]))
            (event,) = [e for e in result.get_asset_materialization_events()
                        if e.asset_key == monitor_key(deployment)]
            meta = {k: v.value for k, v in event.materialization.metadata.items()}
            phases.append({
                "deployment": deployment, "adapter": adapter, "sent": label,
                "prompts": len(prompts), "requests": meta["requests"],
                "p99_ms": meta.get("worst_p99_ms"), "drift": meta["drift"].get(adapter, {}),
                "alerts": meta["alerts_sent"],
                "checks": {e.check_name: e.passed
                           for e in result.get_asset_check_evaluations()}})
    return phases


def watch_summary(config: FactoryConfig, url: str, phases: list[dict[str, Any]]) -> str:
    """What the demo's watch showed, for its closing summary."""
    lines = []
    for phase in phases:
        drift = phase["drift"]
        verdict = "passed" if phase["checks"]["drift"] else "FAILED"
        lines.append(
            f"{phase['adapter']} asked {phase['prompts']} of {phase['sent']}: "
            f"monitor/{phase['deployment']} counts {phase['requests']} requests "
            f"(p99 {phase['p99_ms']} ms); drift check {verdict}: energy distance "
            f"{drift.get('energy_distance')}, p {drift.get('p_value')} over "
            f"{drift.get('recent_prompts')} recent vs {drift.get('reference_prompts')} "
            f"training prompts" + (f"; alerts: {', '.join(phase['alerts'])}"
                                   if phase["alerts"] else ""))
    monitor = config.deployments[phases[0]["deployment"]].monitor
    if monitor is not None and monitor.on_failure != "alert":
        lines.append(f"on failure the monitor is to {monitor.on_failure}: Dagster's daemon "
                     f"observes trigger/deployment/{phases[0]['deployment']} and automation "
                     "runs what follows (Dagster UI, Runs)")
    lines.append(f"Monitor page: {url}/studio#monitor (the demo key's requests per model, "
                 "charted against the monitor's thresholds; the checks: Dagster UI)")
    return "\n  ".join(lines)


def _pid_file(config: FactoryConfig, name: str) -> Path:
    return config.work_dir / f"{name}.pid"


def _start_process(config: FactoryConfig, name: str, command: list[str], health: str,
                   timeout_s: float, env: dict[str, str] | None = None) -> None:
    """Run `command` in its own session, logging to work/<name>.log, until `health` answers."""
    log = config.work_dir / f"{name}.log"
    with log.open("ab") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True, cwd=config.root, env=env)
    _pid_file(config, name).write_text(str(process.pid))
    deadline = time.monotonic() + timeout_s
    while not _healthy(health):
        if process.poll() is not None or time.monotonic() > deadline:
            _stop_process(config, name)
            tail = log.read_text(errors="replace").splitlines()[-15:]
            raise RuntimeError(f"the {name} did not start at {health}; {log}:\n"
                               + "\n".join(tail))
        time.sleep(0.5)


def start(config: FactoryConfig, port: int | None = None, timeout_s: float = 60) -> str:
    """The gateway's URL, starting it unless it already answers there (on `gateway.port`
    unless another port is given)."""
    s = config.gateway_settings
    port = port or s.port
    url = f"http://{s.host}:{port}"
    if not _healthy(f"{url}/health"):
        _start_process(config, "gateway", [
            str(Path(sys.executable).with_name("factory-gateway")), "--config",
            str(config.root / "factory.yaml"), "serve", "--port", str(port)],
            f"{url}/health", timeout_s)
    return url


def start_dagster(config: FactoryConfig, home: Path, timeout_s: float = 180) -> str:
    """Dagster's webserver and daemon (`dg dev` on this repository's Dagster project) where the
    Studio launches its runs (`gateway.studio.dagster_url`), unless they already answer there."""
    url = config.gateway_settings.studio.dagster_url
    if not _healthy(f"{url}/server_info"):
        _start_process(config, "dagster", [
            str(Path(sys.executable).with_name("dg")), "dev",
            "--target-path", str(Path(__file__).resolve().parents[1]),
            "--host", urlsplit(url).hostname or "127.0.0.1",
            "--port", str(urlsplit(url).port or 3000)],
            f"{url}/server_info", timeout_s, env={
                **os.environ, "DAGSTER_HOME": str(home),
                "FACTORY_CONFIG": str(config.root / "factory.yaml")})
    return url


def _healthy(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code in (200, 503)
    except httpx.HTTPError:
        return False


def stop(config: FactoryConfig) -> bool:
    """Stop the gateway the demo started; False when none was running."""
    return _stop_process(config, "gateway")


def stop_dagster(config: FactoryConfig) -> bool:
    """Stop the Dagster webserver and daemon the demo started; False when none was running."""
    return _stop_process(config, "dagster")


def _stop_process(config: FactoryConfig, name: str) -> bool:
    pid_file = _pid_file(config, name)
    if not pid_file.is_file():
        return False
    pid = int(pid_file.read_text())
    pid_file.unlink()
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.2)
    os.killpg(pid, signal.SIGKILL)
    return True
