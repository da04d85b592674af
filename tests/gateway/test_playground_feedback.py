"""The loop in a real browser (Chromium driven by Playwright): a person rates a reply, corrects
it, says which side of a comparison is better, and reopens a kept conversation to continue it;
what they did is read back from the gateway's store. The gateway runs for real in front of the
fake engine (tests/support/capture.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import playwright.sync_api as pw
import pytest
from sqlalchemy import select

from gateway.db import Feedback, StoredCompletion
from tests.gateway.test_playground import shot, sign_in
from tests.support.capture import ADMIN_ENV, ADMIN_TOKEN, Running, Tenant, running_gateway


@pytest.fixture(scope="module")
def kept(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    with pytest.MonkeyPatch.context() as env:
        env.setenv(ADMIN_ENV, ADMIN_TOKEN)
        yield from running_gateway("sqlite", tmp_path_factory.mktemp("playground-loop"))


def stored(kept: Running, tenant: Tenant) -> tuple[list[StoredCompletion], list[Feedback]]:
    kept.gateway.audit.drain()
    project_id = kept.gateway.tenancy.project_id(tenant.project)
    with kept.gateway.sessions() as s:
        return (list(s.scalars(select(StoredCompletion).where(
                    StoredCompletion.project_id == project_id).order_by(StoredCompletion.id))),
                list(s.scalars(select(Feedback).where(Feedback.project_id == project_id)
                               .order_by(Feedback.id))))


def test_a_person_rates_corrects_and_prefers_a_side(kept: Running, page: object,
                                                    tmp_path: Path) -> None:
    tenant = kept.project("request")
    sign_in(page, kept.url, tenant.key)
    page.fill("#chat-input", "How do I reset my password?")  # type: ignore[attr-defined]
    page.click("#send")  # type: ignore[attr-defined]
    bar = page.locator("#conversation .feedback")  # type: ignore[attr-defined]
    bar.get_by_role("button", name="Good").click()
    pw.expect(bar.locator(".said")).to_have_text("rated good")
    bar.get_by_role("button", name="Correct").click()
    editor = bar.locator("textarea.correction")
    pw.expect(editor).to_have_value("tok " * 5)  # the reply, ready to edit
    editor.fill("Open Settings, then Security, then Reset password.")
    bar.get_by_role("button", name="Save correction").click()
    pw.expect(bar.locator(".said")).to_have_text("correction saved")
    shot(page, tmp_path, "rated-and-corrected")

    page.click("nav button[data-tab=compare]")  # type: ignore[attr-defined]
    page.fill("#compare-input", "Which plan suits a team of five?")  # type: ignore
    page.click("#compare-form button")  # type: ignore[attr-defined]
    first = page.locator("#compare-answers .column").first  # type: ignore[attr-defined]
    first.get_by_role("button", name="This side is better").click()
    pw.expect(first.locator(".said")).to_have_text("preferred")
    shot(page, tmp_path, "preferred")

    chats, feedback = stored(kept, tenant)
    by_row = {c.id: c for c in chats}
    assert [(f.rating, f.correction) for f in feedback[:2]] == [
        ("up", None), (None, "Open Settings, then Security, then Reset password.")]
    assert "How do I reset my password?" in by_row[feedback[0].completion_row].messages
    preference = feedback[2]
    assert preference.better_than is not None
    chosen, other = by_row[preference.completion_row], by_row[preference.better_than]
    assert chosen.model == first.get_attribute("data-model") and other.model != chosen.model
    assert chosen.messages == other.messages  # the same conversation, two answers


def test_a_kept_conversation_is_reopened_and_continued(kept: Running, page: object,
                                                       tmp_path: Path) -> None:
    tenant = kept.project("request")
    sign_in(page, kept.url, tenant.key)
    for text in ("first question", "second question"):
        page.fill("#chat-input", text)  # type: ignore[attr-defined]
        page.click("#send")  # type: ignore[attr-defined]
        pw.expect(page.locator("#conversation .feedback")).to_have_count(  # type: ignore
            1 if text.startswith("first") else 2)
    page.click("#clear")  # type: ignore[attr-defined]
    page.click("nav button[data-tab=sessions]")  # type: ignore[attr-defined]
    listed = page.locator("#sessions tbody tr")  # type: ignore[attr-defined]
    pw.expect(listed).to_have_count(1)
    pw.expect(listed.locator("td").first).to_have_text("first question")
    pw.expect(listed.locator("td").nth(1)).to_have_text("2")
    shot(page, tmp_path, "sessions")
    listed.get_by_role("button", name="Open").click()
    messages = page.locator("#conversation .message")  # type: ignore[attr-defined]
    pw.expect(messages).to_have_count(4)
    page.fill("#chat-input", "third question")  # type: ignore[attr-defined]
    page.click("#send")  # type: ignore[attr-defined]
    pw.expect(page.locator("#conversation .feedback")).to_have_count(1)  # type: ignore
    chats, _ = stored(kept, tenant)
    assert len({c.session for c in chats}) == 1 and len(chats) == 3
    assert '"third question"' in chats[-1].messages and '"first question"' in chats[-1].messages


def test_a_project_that_keeps_nothing_offers_no_rating_and_says_why(
        kept: Running, page: object) -> None:
    tenant = kept.project("off")
    sign_in(page, kept.url, tenant.key)
    page.fill("#chat-input", "hi")  # type: ignore[attr-defined]
    page.click("#send")  # type: ignore[attr-defined]
    pw.expect(page.locator("#conversation .stats")).to_contain_text("tokens")  # type: ignore
    assert page.locator("#conversation .feedback").count() == 0  # type: ignore[attr-defined]
    page.click("nav button[data-tab=sessions]")  # type: ignore[attr-defined]
    pw.expect(page.locator("#no-capture")).to_be_visible()  # type: ignore[attr-defined]
    assert stored(kept, tenant) == ([], [])
