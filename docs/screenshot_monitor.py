"""docs/monitoring.md's and the README's picture of the Studio's Monitor page, from the running
demo, in Debian's Chromium:

    .venvs/factory/bin/python docs/screenshot_monitor.py KEY [--out docs]

Run after `make demo`, with the key it printed. Prints what the page says of each model.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import playwright.sync_api as pw

from config.loading import load_config


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("key")
    parser.add_argument("--out", default="docs")
    args = parser.parse_args()
    url = f"http://127.0.0.1:{load_config().gateway_settings.port}"
    with pw.sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(f"{url}/studio#monitor")
        page.fill("#key", args.key)
        page.click("#sign-in-form button")
        pw.expect(page.locator(".monitor-model svg.chart").first).to_be_visible()
        page.select_option("#monitor-hours", "1")
        with page.expect_response(lambda r: "window=60" in r.url):  # the last hour by minute
            page.select_option("#monitor-window", "60")
        page.wait_for_load_state("networkidle")
        for title in page.locator(".monitor-model h3").all_inner_texts():
            print(title)
        page.screenshot(path=str(Path(args.out) / "studio-monitor.png"), full_page=True)
        browser.close()


if __name__ == "__main__":
    main()
