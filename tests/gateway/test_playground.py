"""The playground in a real browser (Debian's Chromium driven by Playwright) against the real
gateway and the small project's real vLLM server: what a person judging an adapter sees.
Screenshots of every state land in the test's temporary folder; with
FACTORY_PLAYGROUND_SCREENSHOT=<path> the compare view is also saved there (docs/playground.png)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import httpx
import playwright.sync_api as pw

from tests.support.gateway_fixtures import RunningGateway
from tests.support.rag import Project, question


def shot(page: object, tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)  # type: ignore[attr-defined]
    return path


def sign_in(page: object, url: str, key: str, accepted: bool = True) -> None:
    """Sign in; an accepted key is signed in once the models, collections, card and usage are
    loaded (the page shows itself only then)."""
    page.goto(f"{url}/playground/")  # type: ignore[attr-defined]
    page.fill("#key", key)  # type: ignore[attr-defined]
    page.click("#sign-in-form button")  # type: ignore[attr-defined]
    if accepted:
        pw.expect(page.locator("#app")).to_be_visible()  # type: ignore[attr-defined]


def options(page: object, select: str) -> list[str]:
    return page.locator(f"{select} option").all_inner_texts()  # type: ignore[attr-defined]


def test_a_wrong_key_shows_the_apis_401_message(gateway_server: RunningGateway, page: object,
                                                 tmp_path: Path) -> None:
    sign_in(page, gateway_server.url, "af-not-a-key", accepted=False)
    error = page.locator("#error")  # type: ignore[attr-defined]
    pw.expect(error).to_have_text("401: Invalid or revoked API key.")
    assert page.locator("#app").is_hidden()  # type: ignore[attr-defined]
    shot(page, tmp_path, "wrong-key")


def test_the_page_is_served_whole_by_the_gateway_with_a_strict_policy(
        gateway_server: RunningGateway) -> None:
    """Works offline: every asset from the gateway itself; no script from anywhere else."""
    with httpx.Client(base_url=gateway_server.url) as client:
        page = client.get("/playground/")
        assert page.status_code == 200
        assert "default-src 'self'" in page.headers["content-security-policy"]
        for asset in ("playground.js", "common.js", "playground.css"):
            assert client.get(f"/playground/{asset}").status_code == 200
    assert "http" not in page.text.replace(gateway_server.url, "")


def test_signed_in_a_person_chats_reads_the_card_and_sees_usage(
        gateway_server: RunningGateway, page: object, tmp_path: Path) -> None:
    gw = gateway_server
    sign_in(page, gw.url, gw.key)
    listed = gw.client().get("/v1/models").json()["data"]
    chat = sorted(m["id"] for m in listed if m["type"] == "chat")
    assert sorted(options(page, "#model")) == chat and "math-lora" in chat
    assert gw.gateway.settings.embedding_model_name in {m["id"] for m in listed} - set(chat)
    page.select_option("#model", "math-lora")  # type: ignore[attr-defined]
    card = page.locator("#card")  # type: ignore[attr-defined]
    pw.expect(card).to_contain_text("Champion since")
    pw.expect(card.locator("table td", has_text="exact match")).to_have_count(1)
    page.fill("#system", "Solve the problem. Give the answer after ####.")  # type: ignore
    page.fill("#chat-input", "Tom has 3 apples and buys 4 more. How many?")  # type: ignore
    page.click("#send")  # type: ignore[attr-defined]
    stats = page.locator("#conversation .stats")  # type: ignore[attr-defined]
    pw.expect(stats).to_contain_text("tokens/s")
    assert page.locator(".message.assistant").inner_text().strip()  # type: ignore[attr-defined]
    # this key's row of today's usage, from the gateway's audit log, counts the answer
    mine = page.locator("#usage tr", has_text="completion tokens").locator("td").nth(1)  # type: ignore
    pw.expect(mine).not_to_have_text("0")
    shot(page, tmp_path, "chat")


def test_compare_streams_two_models_side_by_side(gateway_server: RunningGateway, page: object,
                                                 tmp_path: Path) -> None:
    gw = gateway_server
    sign_in(page, gw.url, gw.key)
    page.click("nav button[data-tab=compare]")  # type: ignore[attr-defined]
    boxes = page.locator("#compare-models input")  # type: ignore[attr-defined]
    for i in range(boxes.count()):
        boxes.nth(i).set_checked(boxes.nth(i).get_attribute("value") in ("math-lora", "tiny"))
    question = "Ava has 7 apples. Ava gets 5 more apples. How many apples does Ava have now?"
    page.fill("#max-tokens", "16")  # type: ignore[attr-defined]
    page.fill("#compare-input", question)  # type: ignore[attr-defined]
    page.click("#compare-form button")  # type: ignore[attr-defined]
    columns = page.locator("#compare-answers .column")  # type: ignore[attr-defined]
    pw.expect(columns).to_have_count(2)
    for i in range(2):
        pw.expect(columns.nth(i).locator(".stats")).to_contain_text("TTFT")
        assert columns.nth(i).locator(".answer").inner_text().strip()
    answers = {columns.nth(i).get_attribute("data-model"):
               " ".join(columns.nth(i).locator(".answer").inner_text().split())
               for i in range(2)}
    # streamed in parallel, so batched together: each column is what its model answers alone
    # (temperature 0, the playground's default). The CI-size models may agree on a reply; the
    # demo's differ (docs/playground.png)
    with gw.client() as client:
        alone = {model: " ".join(client.post("/v1/chat/completions", json={
            "model": model, "temperature": 0, "max_tokens": 16,
            "messages": [{"role": "user", "content": question}]}).json()[
                "choices"][0]["message"]["content"].split()) for model in ("math-lora", "tiny")}
    assert answers == alone
    path = shot(page, tmp_path, "compare")
    if os.environ.get("FACTORY_PLAYGROUND_SCREENSHOT"):
        shutil.copy(path, os.environ["FACTORY_PLAYGROUND_SCREENSHOT"])


def test_documents_answer_with_citations_of_the_expected_source(
        gateway_server: RunningGateway, small_project: Project, page: object,
        tmp_path: Path) -> None:
    gw, q = gateway_server, question(small_project)
    t = gw.gateway.tenancy
    t.grant(gw.project, "filings", kind="collection")
    t.grant(gw.other_project, "their-notes", kind="collection")  # another project's
    sign_in(page, gw.url, gw.key)
    assert options(page, "#collection") == ["filings"]
    page.click("nav button[data-tab=documents]")  # type: ignore[attr-defined]
    page.select_option("#model", "math-lora")  # type: ignore[attr-defined]
    page.fill("#documents-input", q["question"])  # type: ignore[attr-defined]
    page.click("#documents-form button")  # type: ignore[attr-defined]
    first = page.locator("#citations li").first  # type: ignore[attr-defined]
    pw.expect(first).to_contain_text(f"[1] {q['source']}")
    first.locator("summary").click()
    pw.expect(first.locator(".passage")).to_be_visible()
    assert first.locator(".passage").inner_text().strip()
    shot(page, tmp_path, "documents")


def test_the_page_without_the_graph_errors_and_choices(browser: object, tmp_path: Path) -> None:
    """The developer loop's view (a fake vLLM replica): only chat models are offered (the
    embedding model is granted, but cannot chat), a model without a card says so, a refused
    request shows the API's message."""
    from config.gateway import GatewaySettings
    from gateway.app import build_gateway
    from gateway.upstream import ReplicaPool
    from tests.support.fake_vllm import FakeVLLM
    from tests.support.live_server import serve

    settings = GatewaySettings(database_url=f"sqlite:///{tmp_path / 'gateway.db'}",
                               upstreams=["http://replica-1:8000"], refresh_seconds=3600,
                               object_store=f"file://{tmp_path / 'store'}",
                               audit_dead_letter=str(tmp_path / "dead-letter.jsonl"))
    fake = FakeVLLM(models=("base", "adapter-a"))
    gateway = build_gateway(settings, ReplicaPool(settings.upstreams, 3600,
                                                  transport=fake.transport()))
    for url, gw in serve(settings, gateway):
        t = gw.tenancy
        t.create_project("team", owner="alice")
        for model in ("adapter-a", "base", settings.embedding_model_name):
            t.grant("team", model)
        key = t.create_key("team", "alice", rpm=3)["key"]
        page = browser.new_page()  # type: ignore[attr-defined]
        sign_in(page, url, key)
        assert options(page, "#model") == ["adapter-a", "base"]
        pw.expect(page.locator("#card")).to_contain_text("No model card")
        page.click("nav button[data-tab=compare]")
        offered = page.locator("#compare-models input")
        assert [offered.nth(i).get_attribute("value") for i in range(offered.count())] == [
            "adapter-a", "base"]
        checked = page.locator("#compare-models input:checked")
        assert checked.count() == 2
        page.click("nav button[data-tab=chat]")
        page.fill("#chat-input", "hi")
        page.click("#send")  # the key's 3 requests a minute are spent by now
        pw.expect(page.locator("#error")).to_contain_text("429: ")
        pw.expect(page.locator("#error")).to_contain_text("try again in")
        shot(page, tmp_path, "rate-limited")
        page.close()


def test_documents_name_the_passages_a_small_window_left_out(browser: object,
                                                             tmp_path: Path) -> None:
    """A 512-token model (a fake replica), the demo's settings (a system prompt, 64 tokens) and
    a long question: the answer comes with the passages that fitted, and the page says which
    were left out and why."""
    from tests.support.rag import LONG_QUESTION, SYSTEM, small_window_gateway

    for served in small_window_gateway(tmp_path):
        page = browser.new_page()  # type: ignore[attr-defined]
        sign_in(page, served.url, served.key)
        page.click("nav button[data-tab=documents]")
        page.fill("#system", SYSTEM)
        page.fill("#documents-input", LONG_QUESTION)
        page.click("#documents-form button")
        pw.expect(page.locator("#citations li")).to_have_count(2)
        left_out = page.locator("#left-out")
        pw.expect(left_out).to_be_visible()
        pw.expect(left_out).to_have_text("Left out: filing-0002.txt (rank 3, context budget); "
                                         "filing-0003.txt (rank 4, context budget)")
        assert page.locator("#error").is_hidden()
        shot(page, tmp_path, "documents-left-out")
        page.close()


def test_speech_from_a_file_and_the_microphone_goes_to_chat(browser: object,
                                                           tmp_path: Path) -> None:
    """The speech tab before a fake engine: an uploaded Ogg and a microphone recording (Chromium's
    fake device, recorded as WebM) are transcribed through the gateway, whose engine receives 16 kHz
    WAV of the recording's length; the transcript goes to the chat box; usage counts the seconds;
    a file that is not audio shows the API's message. Real Whisper: tests/speech/test_speech.py."""
    from config.gateway import GatewaySettings, SpeechSettings
    from gateway.app import build_gateway
    from gateway.upstream import ReplicaPool
    from tests.support.audio_files import encoded, signal
    from tests.support.fake_vllm import FakeVLLM
    from tests.support.live_server import serve

    settings = GatewaySettings(database_url=f"sqlite:///{tmp_path / 'gateway.db'}",
                               upstreams=["http://replica-1:8000"], refresh_seconds=3600,
                               audit_dead_letter=str(tmp_path / "dead-letter.jsonl"),
                               speech=SpeechSettings(models=["whisper"]))
    fake = FakeVLLM(models=("chatty", "whisper"), base="chatty")
    gateway = build_gateway(settings, ReplicaPool(settings.upstreams, 3600,
                                                  transport=fake.transport()))
    for url, gw in serve(settings, gateway):
        gw.tenancy.create_project("team", owner="alice")
        for model in ("chatty", "whisper"):
            gw.tenancy.grant("team", model)
        page = browser.new_page()  # type: ignore[attr-defined]
        sign_in(page, url, gw.tenancy.create_key("team", "alice")["key"])
        assert options(page, "#model") == ["chatty"]  # a speech model cannot chat
        page.click("nav button[data-tab=speech]")
        assert options(page, "#speech-model") == ["whisper"]

        page.set_input_files("#audio-file", files=[{
            "name": "standup.ogg", "mimeType": "audio/ogg",
            "buffer": encoded(signal(3.0), "ogg")}])
        page.click("#transcribe")
        pw.expect(page.locator("#settings")).to_be_hidden()  # chat settings
        pw.expect(page.locator("#transcript")).to_have_text("window 1")
        pw.expect(page.locator("#segments li")).to_have_text(["00:00:00window 1"])
        pw.expect(page.locator("#transcript-stats")).to_contain_text("3.0 s of audio in")
        audio = page.locator("#usage tr", has_text="audio seconds").locator("td").nth(1)
        pw.expect(audio).to_have_text("3.0")
        shot(page, tmp_path, "speech-file")

        page.click("#record")
        pw.expect(page.locator("#record")).to_have_text("Stop recording")
        page.wait_for_timeout(1500)  # type: ignore[attr-defined]
        page.click("#record")
        pw.expect(page.locator("#audio-chosen")).to_contain_text("recording.webm")
        page.click("#transcribe")
        pw.expect(page.locator("#transcript")).to_have_text("window 2")
        sent = fake.sent("/v1/audio/transcriptions")
        assert [s["model"] for s in sent] == ["whisper", "whisper"]
        assert all(s["file"].startswith(b"RIFF") for s in sent)  # decoded to WAV by the gateway
        recorded_s = (sent[1]["file_bytes"] - 44) / 2 / 16_000
        assert 1.0 < recorded_s < 4.0, recorded_s

        page.click("#to-chat")
        pw.expect(page.locator("#tab-chat")).to_be_visible()
        pw.expect(page.locator("#chat-input")).to_have_value("window 2")

        page.click("nav button[data-tab=speech]")
        page.set_input_files("#audio-file", files=[{
            "name": "notes.ogg", "mimeType": "audio/ogg", "buffer": b"these are not sounds"}])
        page.click("#transcribe")
        pw.expect(page.locator("#error")).to_contain_text(
            "400: file 'notes.ogg' is not an audio file this endpoint reads")
        assert len(fake.sent("/v1/audio/transcriptions")) == 2
        page.close()


def test_one_click_on_record_makes_one_recording_however_often_the_tabs_were_switched(
        browser: object, tmp_path: Path) -> None:
    """The speech tab's buttons are wired once: after many tab switches one click on Record and
    one on stop make one recording (Chromium's fake microphone), and one click on Transcribe
    sends it once."""
    from config.gateway import GatewaySettings, SpeechSettings
    from gateway.app import build_gateway
    from gateway.upstream import ReplicaPool
    from tests.support.fake_vllm import FakeVLLM
    from tests.support.live_server import serve

    settings = GatewaySettings(database_url=f"sqlite:///{tmp_path / 'gateway.db'}",
                               upstreams=["http://replica-1:8000"], refresh_seconds=3600,
                               audit_dead_letter=str(tmp_path / "dead-letter.jsonl"),
                               speech=SpeechSettings(models=["whisper"]))
    fake = FakeVLLM(models=("chatty", "whisper"), base="chatty")
    gateway = build_gateway(settings, ReplicaPool(settings.upstreams, 3600,
                                                  transport=fake.transport()))
    for url, gw in serve(settings, gateway):
        gw.tenancy.create_project("team", owner="alice")
        for model in ("chatty", "whisper"):
            gw.tenancy.grant("team", model)
        page = browser.new_page()  # type: ignore[attr-defined]
        # counts the recordings the page starts and the transcriptions it asks for (Playwright's
        # script, not the page's: the page's policy does not apply to it)
        page.add_init_script("""
            window.recordings = 0;
            window.transcriptions = 0;
            const start = MediaRecorder.prototype.start;
            MediaRecorder.prototype.start = function (...args) {
              window.recordings += 1;
              return start.apply(this, args);
            };
            const fetch = window.fetch;
            window.fetch = (url, ...rest) => {
              if (String(url).endsWith("/v1/audio/transcriptions")) window.transcriptions += 1;
              return fetch(url, ...rest);
            };""")
        sign_in(page, url, gw.tenancy.create_key("team", "alice")["key"])
        for tab in ("speech", "chat", "compare", "documents", "speech", "chat", "speech"):
            page.click(f"nav button[data-tab={tab}]")
        pw.expect(page.locator("#tab-speech")).to_be_visible()

        page.click("#record")
        pw.expect(page.locator("#record")).to_have_text("Stop recording")
        page.wait_for_timeout(1000)
        page.click("#record")
        pw.expect(page.locator("#audio-chosen")).to_contain_text("recording.webm")
        page.wait_for_timeout(500)  # any other recorder would have toggled the button by now
        pw.expect(page.locator("#record")).to_have_text("Record")
        assert page.evaluate("() => window.recordings") == 1

        page.click("#transcribe")
        pw.expect(page.locator("#transcript")).to_have_text("window 1")
        pw.expect(page.locator("#transcript-stats")).to_contain_text("of audio in")
        page.wait_for_timeout(500)  # a second request would have been sent by now
        assert page.evaluate("() => window.transcriptions") == 1
        assert len(fake.sent("/v1/audio/transcriptions")) == 1
        shot(page, tmp_path, "speech-after-tab-switches")
        page.close()
