"""The Studio's "Make a dataset from feedback" (issue #43): a member previews and makes a data
file from what people said about the project's kept chats, curated and reported like an upload,
ready to train on; another project's feedback never shows. Through the API and in Chromium."""

from __future__ import annotations

from pathlib import Path

import httpx
import playwright.sync_api as pw

from tests.studio.test_studio_browser import shot, sign_in
from tests.support.studio import Member, StudioHarness


def rated_project(studio: StudioHarness) -> Member:
    """A project that keeps chats, with a reply rated good, one rated bad and one corrected."""
    owner = studio.member("owner")
    tenancy = studio.gateway.tenancy
    tenancy.grant(owner.project, "adapter-a")
    tenancy.set_capture(owner.project, "request", False)
    with httpx.Client(base_url=studio.url, timeout=30,
                      headers={"authorization": f"Bearer {owner.key}"}) as http:
        for question, feedback in [("How do I export my data?", {"rating": "up"}),
                                   ("Why was I charged twice?", {"rating": "down"}),
                                   ("Where can I change my plan?",
                                    {"correction": "Under Settings, then Billing, then Plan."})]:
            chat = http.post("/v1/chat/completions", json={
                "model": "adapter-a", "max_tokens": 4, "store": True,
                "messages": [{"role": "user", "content": question}]}).json()
            assert http.post(f"/v1/chat/completions/{chat['id']}/feedback",
                             json=feedback).status_code == 200
    return owner


def test_a_member_previews_and_makes_a_data_file_from_feedback(studio: StudioHarness) -> None:
    owner = rated_project(studio)
    stranger = studio.member("owner")
    with studio.client(owner) as c:
        preview = c.get("/datasets/from-feedback", params={"kind": "feedback"}).json()
        assert (preview["feedback"], preview["rows"]) == (3, 4)  # a correction makes two
        assert {e["label"] for e in preview["examples"]} == {True, False}
        made = c.post("/datasets/from-feedback", json={"kind": "sft"})
        assert made.status_code == 201, made.text
        meta = made.json()
        assert meta["kind"] == "sft" and meta["label"] == "feedback-sft.jsonl"
        assert meta["report"]["rows_in"] == 2 and meta["report"]["rows_kept"] == 2
        assert [d["id"] for d in c.get("/datasets").json()["data"]] == [meta["id"]]
        bad = c.post("/datasets/from-feedback", json={"kind": "pretrain"})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "kind"
    with studio.client(stranger) as c:  # another project's feedback is not theirs to read
        assert c.get("/datasets/from-feedback").json()["rows"] == 0
        none = c.post("/datasets/from-feedback", json={"kind": "sft"})
        assert none.status_code == 400 and none.json()["error"]["code"] == "no_feedback"


def test_the_studio_page_makes_a_data_file_from_feedback(studio: StudioHarness, page: pw.Page,
                                                         tmp_path: Path) -> None:
    owner = rated_project(studio)
    sign_in(page, studio.url, owner.key)
    page.click("#from-feedback summary")
    page.select_option("#feedback-kind", "preference")
    page.click("#feedback-preview")
    pw.expect(page.locator("#feedback-counts")).to_have_text(
        "1 row(s) from 3 piece(s) of feedback")
    pw.expect(page.locator("#feedback-examples")).to_contain_text(
        "chosen: Under Settings, then Billing, then Plan.")
    page.click("#feedback-form button[type=submit]")
    pw.expect(page.locator("#report-title")).to_have_text(
        "feedback-preference.jsonl: 1 of 1 rows kept")
    pw.expect(page.locator("#datasets tbody tr")).to_have_count(1)
    shot(page, tmp_path, "from-feedback")
