"""The Studio's Monitor page (issue #44): a project sees its own requests to the models it may
use, window by window, with the platform's thresholds; another project sees none of them.
Through the API and drawn in Chromium."""

from __future__ import annotations

from pathlib import Path

import httpx
import playwright.sync_api as pw

from tests.studio.test_studio_browser import shot, sign_in
from tests.support.studio import Member, StudioHarness


def busy_project(studio: StudioHarness, requests: int) -> Member:
    owner = studio.member("owner")
    studio.gateway.tenancy.grant(owner.project, "adapter-a")
    with httpx.Client(base_url=studio.url, timeout=30,
                      headers={"authorization": f"Bearer {owner.key}"}) as http:
        for i in range(requests):
            assert http.post("/v1/chat/completions", json={
                "model": "adapter-a", "max_tokens": 2,
                "messages": [{"role": "user", "content": f"hello {i}"}]}).status_code == 200
    return owner


def test_a_project_reads_its_own_series_and_nobody_elses(studio: StudioHarness) -> None:
    busy = busy_project(studio, 5)
    idle = studio.member("owner")
    studio.gateway.tenancy.grant(idle.project, "adapter-a")  # the same model, no requests
    with studio.client(busy) as c:
        read = c.get("/monitor", params={"hours": "1", "window": "300"}).json()
        [window] = read["models"]["adapter-a"]
        assert window["requests"] == 5 and window["completion_tokens"] == 10
        assert c.get("/monitor", params={"window": "7"}).status_code == 400
        assert c.get("/monitor", params={"hours": "x"}).status_code == 400
    with studio.client(idle) as c:
        assert c.get("/monitor").json()["models"] == {}


def test_the_monitor_page_draws_each_models_series(studio: StudioHarness, page: pw.Page,
                                                   tmp_path: Path) -> None:
    busy = busy_project(studio, 3)
    sign_in(page, studio.url, busy.key)
    page.click("nav button[data-page=monitor]")
    model = page.locator(".monitor-model[data-model=adapter-a]")
    pw.expect(model.locator("h3")).to_have_text("adapter-a: 3 requests")
    pw.expect(model.locator("figure")).to_have_count(4)
    pw.expect(model.locator("figcaption").first).to_have_text("requests: last 3")
    shot(page, tmp_path, "monitor")
