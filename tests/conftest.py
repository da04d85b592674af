"""Fixtures that start real services: an S3-compatible server (moto) and the whole small graph."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from config.schema import FactoryConfig
from tests.support.live_server import free_port
from tests.support.projects import materialized

# fixtures shared by several test modules, defined beside the helpers they use
pytest_plugins = ["tests.support.studio", "tests.support.webhooks"]

# Tests that wait for the whole small graph (trained, evaluated, served) are slow by that alone;
# other slow ones (real training runs, Dagster's daemon, monitor runs, Axolotl's or dg's own
# loading in a subprocess, a timeout waited out) carry @pytest.mark.slow themselves, so that
# `make test-fast` stays the two-minute loop.
NEEDS_THE_GRAPH = "small_project"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if NEEDS_THE_GRAPH in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)


def start_service(command: list[str], health_url: str, timeout_s: float = 60
                  ) -> subprocess.Popen:
    """Start a server from this environment's bin/ and wait until `health_url` answers 2xx."""
    command = [str(Path(sys.executable).with_name(command[0])), *command[1:]]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if httpx.get(health_url, timeout=1).is_success:
                return proc
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            raise RuntimeError(f"{command[0]} did not start")
        time.sleep(0.2)


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """moto's S3-compatible server on 127.0.0.1 (MinIO cannot be installed here)."""
    url = f"http://127.0.0.1:{free_port()}"
    proc = start_service(["moto_server", "-H", "127.0.0.1", "-p", url.rsplit(":", 1)[1]],
                         f"{url}/moto-api/")
    yield url
    proc.terminate()
    proc.wait(10)


@pytest.fixture
def s3_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")


@pytest.fixture(scope="session")
def small_project(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[FactoryConfig, object]]:
    """The whole graph of tests/configs/small.yaml materialized once, in process."""
    yield from materialized("small.yaml", tmp_path_factory.mktemp("project"))


@pytest.fixture(scope="session")
def vllm_url(small_project: tuple[FactoryConfig, object]) -> str:
    from tests.support.gateway_fixtures import ensure_deployment

    return ensure_deployment(small_project[0])


@pytest.fixture(scope="session")
def gateway_server(vllm_url: str, small_project: tuple[FactoryConfig, object],
                   tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """The gateway on SQLite + in-memory limits (the embedded default) before the real vLLM."""

    from config.gateway import GatewaySettings
    from tests.support.gateway_fixtures import ADMIN_TOKEN, RunningGateway, serve, tenants

    with pytest.MonkeyPatch.context() as env:  # restored after the session
        env.setenv("FACTORY_GATEWAY_ADMIN_TOKEN", ADMIN_TOKEN)
        db = tmp_path_factory.mktemp("gateway") / "gateway.db"
        settings = GatewaySettings(database_url=f"sqlite:///{db}", upstreams=[vllm_url],
                                   chroma_path=str(small_project[0].work_dir / "chroma"),
                                   object_store=small_project[0].gateway_settings.object_store)
        for url, gateway in serve(settings):
            ours, key, theirs, other_key = tenants(gateway, ["tiny", "math-lora"])
            yield RunningGateway(url, gateway, ours, key, theirs, other_key)


# -- a real browser (Debian's Chromium driven by Playwright) for the playground and the Studio --
CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    import playwright.sync_api as pw

    if not Path(CHROMIUM).is_file():
        pytest.fail(f"{CHROMIUM} is missing: `make setup` installs it (apt-get install chromium)")
    with pw.sync_playwright() as p:
        # a fake microphone (a beep) that needs no permission prompt, for the speech tab
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"])
        yield browser
        browser.close()


@pytest.fixture
def page(browser: object, tmp_path: Path) -> Iterator[object]:
    page = browser.new_page(viewport={"width": 1400, "height": 900})  # type: ignore[attr-defined]
    page.set_default_timeout(60_000)  # answers come from a CPU engine
    yield page
    page.close()
