"""docs/studio.md's playground picture, from the running demo: the adapter and its base model
answering one held-out question side by side in the compare view, in Debian's Chromium.

    .venvs/factory/bin/python docs/screenshot_playground.py KEY [--out docs/playground.png]

Run after `make demo`, with the key it printed; the gateway and vLLM keep running after it.
"""

from __future__ import annotations

import argparse

import playwright.sync_api as pw

from config.loading import load_config
from pipelines.graph import resources_for


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("key")
    parser.add_argument("--out", default="docs/playground.png")
    parser.add_argument("--url", default=None, help="the gateway (default: factory.yaml's)")
    args = parser.parse_args()
    config = load_config()
    url = args.url or f"http://127.0.0.1:{config.gateway_settings.port}"
    (name, deployment), *_ = config.deployments.items()
    adapter, base = deployment.adapters[0], deployment.base_model
    from pipelines.cli import example_conversation

    conversation = example_conversation(config, resources_for(config)["store"], adapter)
    system = next((m["content"] for m in conversation if m["role"] == "system"), "")
    question = conversation[-1]["content"]
    with pw.sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 820})
        page.set_default_timeout(120_000)
        page.goto(f"{url}/playground/")
        page.fill("#key", args.key)
        page.click("#sign-in-form button")
        pw.expect(page.locator("#app")).to_be_visible()
        page.fill("#system", system)
        page.click("nav button[data-tab=compare]")
        boxes = page.locator("#compare-models input")
        for i in range(boxes.count()):
            boxes.nth(i).set_checked(boxes.nth(i).get_attribute("value") in (adapter, base))
        page.fill("#compare-input", question)
        page.click("#compare-form button")
        columns = page.locator("#compare-answers .column")
        pw.expect(columns).to_have_count(2)
        for i in range(2):
            pw.expect(columns.nth(i).locator(".stats")).to_contain_text("tokens/s")
        page.screenshot(path=args.out, full_page=True)
        browser.close()
    print(f"{args.out}: {adapter} vs {base} on {question!r} ({name})")


if __name__ == "__main__":
    main()
