"""The Studio in a real browser (Debian's Chromium driven by Playwright).

Slow: a member and an owner of a project, against the real gateway, Dagster's webserver and
daemon (`factory ui`), the small base model and a real vLLM server: upload a CSV of tickets with
broken rows, map its columns, see the quarantine; launch a short training, follow it to the end
with its loss curve; read the evaluation and the gate; a member may not promote, the owner does;
the playground then chats with the new adapter.

Fast: a hostile tenant's text (a file name, a model reply) is shown as text, never run.

Screenshots of each page land in the test's folder; with FACTORY_STUDIO_SCREENSHOTS=<folder>
they are also copied there (docs/, for docs/studio.md).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import playwright.sync_api as pw
import pytest

from config.loading import load_config
from config.schema import FactoryConfig
from pipelines import playground
from tests.conftest import free_port
from tests.support.live_server import wait_until_up
from tests.support.studio import TICKETS, Member, StudioHarness, mapped_tickets, publish_evaluation
from tests.support.ui import start_ui, stop_ui

FACTORY = Path(sys.executable).with_name("factory")


@dataclass
class Platform:
    root: Path
    config: FactoryConfig
    url: str
    member_key: str
    owner_key: str


def platform_file(root: Path) -> None:
    (root / "factory.yaml").write_text(f"""
project: studio-browser
storage: {{object_store: file://store, work_dir: work}}
base_models:
  tiny:
    source: local
    architecture: {{hidden_size: 128, num_layers: 2, num_heads: 2, intermediate_size: 256,
                   vocab_size: 512, max_position_embeddings: 1024}}
    pretrain: {{steps: 30, micro_batch_size: 8, learning_rate: 0.003, sequence_len: 128,
               corpus_documents: 20, arithmetic_lines: 400}}
deployments:
  local: {{base_model: tiny, port: {free_port()}, max_model_len: 1024}}
corpora:
  handbook: {{source: {{path: docs}}, chunk_size: 64, chunk_overlap: 8}}
gateway:
  port: {free_port()}
  studio: {{dagster_url: "http://127.0.0.1:{free_port()}", max_steps: 100}}
""")


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    root = tmp_path_factory.mktemp("studio-platform")
    platform_file(root)
    (root / "docs").mkdir()
    (root / "docs" / "welcome.txt").write_text("Welcome to the support handbook.")
    config = load_config(root / "factory.yaml")
    env = {**os.environ, "DAGSTER_HOME": str(root / "work" / "dagster_home")}
    (root / "work" / "dagster_home").mkdir(parents=True)
    subprocess.run([str(FACTORY), "materialize", "--config", str(root / "factory.yaml"),
                    "--select", "base_model/tiny"], cwd=root, env=env, check=True,
                   capture_output=True)
    dagster_url = config.gateway.studio.dagster_url
    ui = start_ui(root, int(dagster_url.rsplit(":", 1)[1]))
    try:
        wait_until_up(f"{dagster_url}/server_info", ui, root / "dagster.log", 180)
        url = playground.start(config)
        s = config.gateway_settings
        from gateway.db import make_engine, session_factory
        from gateway.tenancy import Tenancy

        tenancy = Tenancy(session_factory(make_engine(s.database_url)), s.default_rpm,
                          s.default_tpm, default_quota=s.project_quota)
        tenancy.create_project("support", owner="lead")
        tenancy.add_member("support", "sam", "member")
        tenancy.grant("support", "handbook", "collection")
        yield Platform(root, config, url, tenancy.create_key("support", "sam")["key"],
                       tenancy.create_key("support", "lead")["key"])
    finally:
        playground.stop(config)
        subprocess.run([str(FACTORY), "stop", "--config", str(root / "factory.yaml")],
                       cwd=root, env=env, check=False, capture_output=True)
        stop_ui(ui)


def shot(page: pw.Page, folder: Path, name: str) -> None:
    path = folder / f"studio-{name}.png"
    page.screenshot(path=str(path), full_page=True)
    if os.environ.get("FACTORY_STUDIO_SCREENSHOTS"):
        shutil.copy(path, Path(os.environ["FACTORY_STUDIO_SCREENSHOTS"]) / path.name)


def sign_in(page: pw.Page, url: str, key: str) -> None:
    page.goto(f"{url}/studio")
    page.fill("#key", key)
    page.click("#sign-in-form button")
    pw.expect(page.locator("#studio")).to_be_visible()


def wait_for_run(page: pw.Page, timeout_s: float) -> str:
    """Until the open run has ended (the page refreshes itself every 3 s); its status."""
    title = page.locator("#run-title")
    pw.expect(title).to_be_visible(timeout=120_000)  # a launch reloads the code location first
    try:
        page.wait_for_function(
            "() => /: (SUCCESS|FAILURE|CANCELED)$/.test(document.querySelector('#run-title')"
            ".textContent)", timeout=timeout_s * 1000)
    except pw.TimeoutError as exc:  # what the page showed, not only that it waited
        raise AssertionError(
            f"after {timeout_s} s the page shows {title.inner_text()!r}, error "
            f"{page.locator('#error').inner_text()!r}, log:\n"
            f"{page.locator('#run-log').inner_text()[-3000:]}") from exc
    return title.inner_text().rsplit(": ", 1)[1]


@pytest.mark.slow
def test_a_member_uploads_trains_and_an_owner_promotes_from_the_browser(
        platform: Platform, browser: pw.Browser, page: pw.Page, tmp_path: Path) -> None:
    data = tmp_path / "tickets.csv"
    rows = TICKETS.split("\n", 1)[1]
    data.write_text(TICKETS + rows * 2)  # copies are duplicates: quarantined, not trained twice
    sign_in(page, platform.url, platform.member_key)
    page.set_input_files("#upload-file", str(data))
    page.click("#upload-form button")
    # curated on arrival; the first upload also loads the base model's tokenizer
    pw.expect(page.locator("#mapping-form")).to_be_visible(timeout=60_000)
    page.select_option("#mapping-fields select[name=prompt]", "ticket")
    page.select_option("#mapping-fields select[name=completion]", "category")
    page.click("#mapping-form button")
    pw.expect(page.locator("#report-title")).to_have_text("tickets.csv: 17 of 60 rows kept")
    reasons = page.locator("#rejections tbody td:nth-child(4)").all_inner_texts()
    assert {"empty_field", "extra_columns", "duplicate"} <= set(reasons)
    assert "the first copy is kept" in page.locator("#rejections").inner_text()
    pw.expect(page.locator("#histogram rect")).to_have_count(12)
    shot(page, tmp_path, "datasets")

    page.click("nav button[data-page=train]")
    page.fill("#train-name", "triage")
    page.select_option("#train-task", "classification")
    page.fill("#hp-max_steps", "10")
    page.locator("#hp-max_steps").dispatch_event("change")
    pw.expect(page.locator("#estimate")).to_contain_text("10 steps x 8 examples")
    shot(page, tmp_path, "train")
    page.click("#launch")
    # the launch reloads the code location first: seconds on 2 busy cores
    pw.expect(page.locator("#run-title")).to_contain_text("triage, train", timeout=120_000)
    assert wait_for_run(page, 600) == "SUCCESS", page.locator("#run-log").inner_text()[-3000:]
    assert page.locator("#run-steps li").count() >= 9
    points = page.locator("#loss polyline.train").get_attribute("points") or ""
    assert len(points.split()) >= 2  # the trainer's logged losses, drawn
    shot(page, tmp_path, "runs")

    page.click("nav button[data-page=results]")
    pw.expect(page.locator("#scores tbody tr")).to_have_count(2)  # base and candidate
    pw.expect(page.locator("#gate")).to_contain_text("exact_match")
    assert page.locator("#samples tbody tr").count() >= 1
    page.click("#promote")
    pw.expect(page.locator("#error")).to_contain_text("Role 'member' may not promote")
    shot(page, tmp_path, "results")

    owner = browser.new_page(viewport={"width": 1400, "height": 900})
    owner.set_default_timeout(60_000)
    sign_in(owner, platform.url, platform.owner_key)
    owner.click("nav button[data-page=results]")
    pw.expect(owner.locator("#champion")).to_contain_text("No champion yet")
    owner.click("#promote")
    assert wait_for_run(owner, 600) == "SUCCESS", owner.locator("#run-log").inner_text()[-3000:]
    owner.click("nav button[data-page=results]")
    pw.expect(owner.locator("#champion")).to_contain_text("Serving champion: version")
    owner.click("#open-playground")
    pw.expect(owner.locator("#app")).to_be_visible()
    pw.expect(owner.locator("#model")).to_have_value("support--triage")
    owner.fill("#chat-input", "My invoice shows the wrong amount")
    owner.click("#send")
    pw.expect(owner.locator(".message.assistant").last).not_to_be_empty(timeout=120_000)
    shot(owner, tmp_path, "playground")
    with httpx.Client(base_url=platform.url, headers={
            "authorization": f"Bearer {platform.owner_key}"}) as c:
        assert "support--triage" in {m["id"] for m in c.get("/v1/models").json()["data"]}

    # a document uploaded in the Studio is re-indexed and cited in the playground
    refunds = tmp_path / "refunds.md"
    refunds.write_text("# Refunds\nRefunds are paid back within five working days.")
    page.goto(f"{platform.url}/studio")  # still signed in (the tab's session storage)
    pw.expect(page.locator("#studio")).to_be_visible()
    page.click("nav button[data-page=documents]")
    pw.expect(page.locator("#document-collection")).to_have_value("handbook")
    page.set_input_files("#document-file", str(refunds))
    page.click("#document-form button")  # stored, then a re-index run is launched
    pw.expect(page.locator("#documents tbody tr")).to_have_count(1, timeout=120_000)
    page.click("nav button[data-page=runs]")
    page.locator("#runs tbody tr", has_text="reindex").locator("a").click()
    assert wait_for_run(page, 600) == "SUCCESS", page.locator("#run-log").inner_text()[-3000:]
    page.click("nav button[data-page=documents]")
    chunks = page.locator("#documents tbody td:nth-child(3)")
    pw.expect(chunks).not_to_have_text("0")
    shot(page, tmp_path, "documents")
    page.click("#ask-documents")
    pw.expect(page.locator("#tab-documents")).to_be_visible()
    page.fill("#documents-input", "How long do refunds take?")
    page.click("#documents-form button")
    pw.expect(page.locator("#citations")).to_contain_text("refunds.md", timeout=120_000)


def test_tenant_text_is_shown_as_text_never_run(studio: StudioHarness,
                                                page: pw.Page, tmp_path: Path) -> None:
    attack = "<img src=x onerror=window.__pwned=1>"
    owner = studio.member("owner")
    with studio.client(owner) as c:
        assert c.post("/datasets", params={"filename": f"{attack}.jsonl"}, content=json.dumps(
            {"prompt": attack, "completion": attack}).encode() + b"\n").status_code == 201
        upload_id = c.get("/datasets").json()["data"][0]["id"]
        assert c.post("/trainings", json={"name": "xss", "dataset": upload_id,
                                          "base_model": "tiny"}).status_code == 201
    model = f"{owner.project}--xss"
    publish_evaluation(studio.store, model, passed=False)
    report = studio.store / f"evaluation/{model}/v1/report.json"
    body = json.loads(report.read_text())
    body["results"]["candidate"]["samples"][0]["output"] = attack
    report.write_text(json.dumps(body))
    sign_in(page, studio.url, owner.key)
    pw.expect(page.locator("#datasets tbody a")).to_have_text(f"{attack}.jsonl")
    page.locator("#datasets tbody a").click()
    pw.expect(page.locator("#preview")).to_contain_text(f"user: {attack}")
    page.click("nav button[data-page=results]")
    pw.expect(page.locator("#samples tbody")).to_contain_text(attack)
    pw.expect(page.locator("#promote")).to_be_disabled()  # the gate did not pass
    assert page.evaluate("() => window.__pwned") is None
    assert page.locator("img").count() == 0
    shot(page, tmp_path, "hostile-text")


def train_form(studio: StudioHarness, page: pw.Page, name: str) -> Member:
    """A member with mapped tickets, signed in, on the Train page with a classification named
    `name`; the member."""
    member = studio.member()
    mapped_tickets(studio, member)
    sign_in(page, studio.url, member.key)
    page.click("nav button[data-page=train]")
    page.fill("#train-name", name)
    page.select_option("#train-task", "classification")
    return member


def test_the_train_page_launches_exactly_what_the_form_says(studio: StudioHarness,
                                                            page: pw.Page) -> None:
    member = train_form(studio, page, "triage")
    page.select_option("#train-effort", "standard")
    pw.expect(page.locator("#hp-max_steps")).to_have_value("120")
    page.fill("#hp-max_steps", "12")
    page.click("#launch")  # the field's change event fires on the way: the button stays put
    pw.expect(page.locator("#run-title")).to_contain_text("triage, train")
    launch = studio.dagster.launches[-1]
    assert launch.tags["studio/project"] == member.project
    with studio.client(member) as c:
        (stored,) = c.get("/trainings").json()["data"]
    assert (stored["effort"], stored["task"], stored["hyperparameters"]["max_steps"],
            stored["hyperparameters"]["lora_r"]) == ("standard", "classification", 12, 16)


def launched(studio: StudioHarness, page: pw.Page, name: str) -> str:
    """A training launched from the Train form, its run page open and queued; its run id."""
    train_form(studio, page, name)
    page.click("#launch")
    pw.expect(page.locator("#run-title")).to_contain_text(f"({name}, train): QUEUED")
    return studio.dagster.launches[-1].run_id


@pytest.mark.slow  # waits out the run page's refresh timers
def test_the_run_page_keeps_following_a_run_through_a_failed_refresh(
        studio: StudioHarness, page: pw.Page) -> None:
    run_id = launched(studio, page, "steady")
    refused = []

    def busy_once(route: pw.Route) -> None:
        if refused:
            route.continue_()
            return
        refused.append(route.request.url)
        route.fulfill(status=503, content_type="application/json", body=json.dumps({"error": {
            "message": "The Studio could not reach Dagster: it did not answer in 30 s",
            "type": "server_error", "code": "dagster_unavailable"}}))

    page.route(f"**/studio/api/runs/{run_id}", busy_once)
    pw.expect(page.locator("#error")).to_contain_text("could not reach Dagster", timeout=10_000)
    studio.dagster.status[run_id] = "SUCCESS"
    assert wait_for_run(page, 30) == "SUCCESS"
    pw.expect(page.locator("#error")).to_be_hidden()


@pytest.mark.slow  # waits out the run page's refresh timers
def test_the_run_page_follows_a_run_whose_list_ended_before_its_detail(
        studio: StudioHarness, page: pw.Page) -> None:
    """The detail is read before the list: a run that ends between the two reads showed its
    old status for good once the list said nothing was in flight (CI, stop 40's second try)."""
    run_id = launched(studio, page, "racing")
    stale = []

    def detail_one_read_behind(route: pw.Route) -> None:
        if stale:
            route.continue_()
            return
        response = route.fetch()
        body = response.json()
        body["run"]["status"] = "STARTED"  # read just before the run ended
        stale.append(body)
        studio.dagster.status[run_id] = "SUCCESS"  # ... and the list, read after, is ended
        route.fulfill(response=response, json=body)

    page.route(f"**/studio/api/runs/{run_id}", detail_one_read_behind)
    pw.expect(page.locator("#run-title")).to_contain_text("racing, train): STARTED")
    assert wait_for_run(page, 30) == "SUCCESS"
