"""The Studio's GraphQL calls as the Dagster webserver receives them (a recording transport):
the exact mutation variables of a launch, the tag filter of a listing, and a webserver that
answers wrongly becoming a clear DagsterUnavailable (the API's 503), never a crash."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from gateway.studio.dagster import DagsterClient, DagsterUnavailable


def recorder(answer: Any, status: int = 200) -> tuple[list[dict], httpx.MockTransport]:
    sent: list[dict] = []

    def handle(request: httpx.Request) -> httpx.Response:
        sent.append(json.loads(request.content))
        if isinstance(answer, bytes):
            return httpx.Response(status, content=answer)
        return httpx.Response(status, json=answer)
    return sent, httpx.MockTransport(handle)


def test_a_launch_sends_the_asset_selection_and_tags() -> None:
    sent, transport = recorder({"data": {"launchRun": {
        "__typename": "LaunchRunSuccess", "run": {"runId": "r-1"}}}})
    client = DagsterClient("http://dagster:3000/", transport=transport)
    run_id = asyncio.run(client.launch("adapter_factory", [["adapter", "p--t"]],
                                       {"studio/project": "p"}))
    assert run_id == "r-1"
    (request,) = sent
    assert "launchRun" in request["query"]
    assert request["variables"]["params"] == {
        "selector": {"repositoryLocationName": "adapter_factory",
                     "repositoryName": "__repository__", "pipelineName": "__ASSET_JOB",
                     "assetSelection": [{"path": ["adapter", "p--t"]}]},
        "mode": "default", "runConfigData": {},
        "executionMetadata": {"tags": [{"key": "studio/project", "value": "p"}]}}


def test_a_run_is_looked_up_by_id_within_the_project() -> None:
    sent, transport = recorder({"data": {"runsOrError": {"__typename": "Runs", "results": []}}})
    client = DagsterClient("http://dagster:3000", transport=transport)
    assert asyncio.run(client.run("p", "abc")) is None
    assert sent[0]["variables"]["filter"] == {
        "tags": [{"key": "studio/project", "value": "p"}], "runIds": ["abc"]}


@pytest.mark.parametrize("answer,status", [
    (b"<html>proxy error</html>", 200), ({"errors": [{"message": "bad field"}]}, 200),
    ({"data": None}, 200), ({"data": {}}, 502), (b"", 200)])
def test_a_wrong_answer_is_dagster_unavailable(answer: Any, status: int) -> None:
    _, transport = recorder(answer, status)
    client = DagsterClient("http://dagster:3000", transport=transport)
    with pytest.raises(DagsterUnavailable):
        asyncio.run(client.runs("p"))


def test_a_failed_reload_is_a_failure() -> None:
    _, transport = recorder({"data": {"reloadRepositoryLocation": {
        "__typename": "WorkspaceLocationEntry",
        "locationOrLoadError": {"__typename": "PythonError", "message": "SyntaxError"}}}})
    with pytest.raises(DagsterUnavailable, match="SyntaxError"):
        asyncio.run(DagsterClient("http://d", transport=transport).reload("x"))
