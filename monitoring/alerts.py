"""One alert per incident: a check that starts failing opens an incident and sends one message;
while it keeps failing nothing more is sent; when it passes again one "resolved" message closes
it. The open incidents are kept where the caller says (the monitor asset: the object store), so a
restart neither repeats an alert nor forgets one.

Delivery never blocks what called it for long and never fails it: each webhook has a timeout and
a few retries, and what could not be delivered is logged and reported back (the monitor's
metadata), not raised.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from config.monitoring import Webhook

log = logging.getLogger("monitoring.alerts")


@dataclass(frozen=True)
class Finding:
    """What a check said on this run."""

    check: str
    passed: bool
    summary: str  # one line a person reads in a chat channel


def body(webhook: Webhook, incident: dict[str, Any]) -> dict[str, Any]:
    if webhook.format == "slack":
        mark = "RESOLVED" if incident["state"] == "resolved" else "FIRING"
        return {"text": f"[{mark}] {incident['deployment']}: {incident['check']}: "
                        f"{incident['summary']}"}
    return incident


def deliver(webhook: Webhook, incident: dict[str, Any],
            post: Callable[..., httpx.Response] = httpx.post) -> str | None:
    """Send one message; None when delivered, else why not (after the retries)."""
    problem = None
    for attempt in range(webhook.retries + 1):
        try:
            response = post(webhook.url, json=body(webhook, incident),
                            timeout=webhook.timeout_s)
            if response.status_code < 300:
                return None
            problem = f"{webhook.url} answered {response.status_code}"
        except httpx.HTTPError as exc:
            problem = f"{webhook.url} did not answer: {type(exc).__name__}"
        log.warning("alert delivery, attempt %d: %s", attempt + 1, problem)
        time.sleep(min(2**attempt * 0.5, 4))
    return problem


def incidents_after(open_incidents: dict[str, dict[str, Any]], findings: list[Finding],
                    deployment: str, now: float) -> tuple[dict[str, dict[str, Any]],
                                                          list[dict[str, Any]]]:
    """The open incidents after this run's findings, and the messages to send: a newly failing
    check fires, a newly passing one resolves, anything else says nothing."""
    still = dict(open_incidents)
    messages = []
    for finding in findings:
        if not finding.passed and finding.check not in still:
            incident = {"deployment": deployment, "check": finding.check, "state": "firing",
                        "since": now, "summary": finding.summary}
            still[finding.check] = incident
            messages.append(incident)
        elif finding.passed and finding.check in still:
            opened = still.pop(finding.check)
            messages.append({**opened, "state": "resolved", "resolved": now,
                             "summary": finding.summary})
    return still, messages


def send(webhooks: list[Webhook], messages: list[dict[str, Any]]) -> list[str]:
    """Every message to every webhook; the problems (empty: all delivered)."""
    return [problem for message in messages for webhook in webhooks
            if (problem := deliver(webhook, message)) is not None]
