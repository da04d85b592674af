"""The Studio's page and the gateway agree on which runs are in flight: the gateway says so with
each run (`in_flight`), so the page follows (polls) and offers to cancel exactly the runs the
gateway counts against a project's limit, and keeps no list of Dagster's states to drift."""

from __future__ import annotations

import re
from pathlib import Path

from gateway.studio.dagster import IN_FLIGHT, Run

STUDIO_JS = Path(__file__).parents[2] / "gateway" / "playground" / "studio.js"
FINISHED = {"SUCCESS", "FAILURE", "CANCELED"}


def run_in(status: str) -> dict[str, object]:
    return Run("r1", status, 0.0, None, None, {}, [], []).as_json()


def test_each_run_says_whether_it_is_in_flight_as_the_gateway_counts_it() -> None:
    assert {"MANAGED", "SUSPENDED", "QUEUED", "STARTED"} <= IN_FLIGHT
    for status in IN_FLIGHT | FINISHED:
        assert run_in(status)["in_flight"] is (status in IN_FLIGHT), status


def test_the_page_reads_in_flight_from_the_run_and_names_no_run_state() -> None:
    page = STUDIO_JS.read_text()
    assert "r.in_flight" in page and "run.in_flight" in page
    assert not re.findall(r'"(?:QUEUED|STARTING|STARTED|CANCELING|MANAGED|SUSPENDED)"', page)
