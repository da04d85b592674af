"""docs/studio.md's pictures and figures, from the running demo: a support lead's CSV of
tickets (with a few broken rows) uploaded, mapped, trained on SmolLM2 with the quick effort,
evaluated, promoted and asked, all in Debian's Chromium through the Studio's pages.

    .venvs/factory/bin/python docs/screenshot_studio.py KEY [--out docs] [--name triage]

Run after `make demo`, with the key it printed (the demo project's owner key); the gateway,
Dagster and vLLM keep running after it. Prints the times and scores it saw.
"""

from __future__ import annotations

import argparse
import csv
import io
import tempfile
import time
from pathlib import Path

import playwright.sync_api as pw

from config.loading import load_config
from pipelines.scaffold import ticket_rows

PATTERN = r"Category: (\w+)"


def tickets_csv(rows: int) -> str:
    """`ticket,triage` as a helpdesk export has them, plus two rows a person would get wrong."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["ticket", "triage"])
    for row in ticket_rows(rows, seed=11):
        writer.writerow([row["messages"][-2]["content"], row["messages"][-1]["content"]])
    out.write("Where is my parcel?,\n")                          # no answer
    out.write("Charged twice, please refund,Category: billing\n")  # an unquoted comma
    return out.getvalue()


def wait_for_run(page: pw.Page) -> tuple[str, float]:
    started = time.monotonic()
    pw.expect(page.locator("#run-title")).to_be_visible(timeout=300_000)
    page.wait_for_function(
        "() => /: (SUCCESS|FAILURE|CANCELED)$/.test(document.querySelector('#run-title')"
        ".textContent)", timeout=3_600_000)
    return page.locator("#run-title").inner_text().rsplit(": ", 1)[1], time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("key")
    parser.add_argument("--out", default="docs")
    parser.add_argument("--name", default="triage")
    parser.add_argument("--rows", type=int, default=240)
    args = parser.parse_args()
    config = load_config()
    url = f"http://127.0.0.1:{config.gateway_settings.port}"
    out = Path(args.out)
    data = Path(tempfile.mkdtemp()) / "tickets.csv"
    data.write_text(tickets_csv(args.rows))
    with pw.sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.set_default_timeout(120_000)
        page.goto(f"{url}/studio")
        page.fill("#key", args.key)
        page.click("#sign-in-form button")
        pw.expect(page.locator("#studio")).to_be_visible()

        page.set_input_files("#upload-file", str(data))
        page.click("#upload-form button")
        pw.expect(page.locator("#mapping-form")).to_be_visible()
        page.select_option("#mapping-fields select[name=prompt]", "ticket")
        page.select_option("#mapping-fields select[name=completion]", "triage")
        page.click("#mapping-form button")
        pw.expect(page.locator("#mapping-form")).to_be_hidden()
        page.screenshot(path=str(out / "studio-datasets.png"), full_page=True)
        print(page.locator("#report-title").inner_text())

        page.click("nav button[data-page=train]")
        page.fill("#train-name", args.name)
        page.select_option("#train-task", "extraction")
        page.fill("#train-pattern", PATTERN)
        page.select_option("#train-effort", "quick")
        page.screenshot(path=str(out / "studio-train.png"), full_page=True)
        page.click("#launch")
        status, seconds = wait_for_run(page)
        print(f"training run: {status} in {seconds:.0f} s")
        page.screenshot(path=str(out / "studio-runs.png"), full_page=True)

        page.click("nav button[data-page=results]")
        page.select_option("#results-training", args.name)
        pw.expect(page.locator("#scores tbody tr").first).to_be_visible()
        print(page.locator("#scores").inner_text())
        print(page.locator("#gate").inner_text())
        page.screenshot(path=str(out / "studio-results.png"), full_page=True)
        if page.locator("#promote").is_enabled():
            page.click("#promote")
            status, seconds = wait_for_run(page)
            print(f"promotion run: {status} in {seconds:.0f} s")
            page.click("nav button[data-page=results]")
            page.select_option("#results-training", args.name)
            page.click("#open-playground")
            pw.expect(page.locator("#app")).to_be_visible()
            page.fill("#chat-input", "I was charged twice for my subscription this month.")
            page.click("#send")
            pw.expect(page.locator(".message.assistant").last).to_contain_text(
                "Category", timeout=300_000)
            page.screenshot(path=str(out / "studio-playground.png"), full_page=True)
            print("playground:", page.locator(".message.assistant").last.inner_text())
        browser.close()


if __name__ == "__main__":
    main()
