"""The Studio's calls to the running Dagster webserver, through its GraphQL API: reload the code
location (a new training's assets appear), launch a run of chosen assets with tags naming the
project and key, list a project's runs with each step's state, read a run's log, terminate one.

The daemon's run queue and the webserver's launcher do the work; the gateway only asks. Every
run the Studio launches carries `studio/project`, which is how a project's runs are found and
how a run of another project is refused (404, as if it did not exist).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

PROJECT_TAG = "studio/project"
KEY_TAG = "studio/key"
KIND_TAG = "studio/kind"  # train, promote or reindex
SUBJECT_TAG = "studio/subject"  # the training's name, or the collection re-indexed
REPOSITORY = "__repository__"
ASSET_JOB = "__ASSET_JOB"

RELOAD = """
mutation Reload($location: String!) {
  reloadRepositoryLocation(repositoryLocationName: $location) {
    __typename
    ... on WorkspaceLocationEntry {
      locationOrLoadError { __typename ... on PythonError { message } }
    }
    ... on PythonError { message }
    ... on ReloadNotSupported { message }
    ... on RepositoryLocationNotFound { message }
    ... on UnauthorizedError { message }
  }
}"""

LOCATIONS = """
query Locations {
  workspaceOrError { __typename ... on Workspace { locationEntries { name } } }
}"""

LAUNCH = """
mutation Launch($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
    ... on InvalidSubsetError { message }
    ... on PipelineNotFoundError { message }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on InvalidOutputError { stepKey }
    ... on RunConflict { message }
    ... on UnauthorizedError { message }
    ... on PresetNotFoundError { message }
    ... on ConflictingExecutionParamsError { message }
    ... on NoModeProvidedError { message }
  }
}"""

RUNS = """
query Runs($filter: RunsFilter!) {
  runsOrError(filter: $filter, limit: 100) {
    __typename
    ... on Runs {
      results {
        runId status creationTime startTime endTime
        tags { key value }
        assetSelection { path }
        stepStats { stepKey status startTime endTime }
      }
    }
    ... on PythonError { message }
  }
}"""

LOGS = """
query Logs($runId: ID!, $cursor: String) {
  logsForRun(runId: $runId, afterCursor: $cursor, limit: 5000) {
    __typename
    ... on EventConnection {
      cursor hasMore
      events {
        __typename
        ... on MessageEvent { message timestamp level stepKey }
        ... on ExecutionStepFailureEvent { error { message } }
      }
    }
    ... on PythonError { message }
    ... on RunNotFoundError { message }
  }
}"""

TERMINATE = """
mutation Terminate($runId: String!) {
  terminateRun(runId: $runId) {
    __typename
    ... on TerminateRunSuccess { run { runId } }
    ... on TerminateRunFailure { message }
    ... on RunNotFoundError { message }
    ... on PythonError { message }
    ... on UnauthorizedError { message }
  }
}"""


# Dagster's run states that count against a project's runs in flight; the page follows (polls)
# and offers to cancel exactly these, reading each run's `in_flight`
IN_FLIGHT = frozenset({"QUEUED", "NOT_STARTED", "STARTING", "STARTED", "CANCELING", "MANAGED",
                       "SUSPENDED"})


class DagsterUnavailable(RuntimeError):
    """The webserver did not answer, or refused the request; the message says which."""


@dataclass(frozen=True)
class Run:
    run_id: str
    status: str
    created: float
    started: float | None
    ended: float | None
    tags: dict[str, str]
    assets: list[str]
    steps: list[dict[str, Any]]

    @property
    def in_flight(self) -> bool:
        return self.status in IN_FLIGHT

    def as_json(self) -> dict[str, Any]:
        return {"id": self.run_id, "status": self.status, "in_flight": self.in_flight,
                "created": self.created, "started": self.started, "ended": self.ended,
                "assets": self.assets, "kind": self.tags.get(KIND_TAG),
                "subject": self.tags.get(SUBJECT_TAG), "steps": self.steps}


class DagsterClient:
    def __init__(self, url: str, timeout: float = 30.0,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.url = url.rstrip("/") + "/graphql"
        self.timeout, self.transport = timeout, transport  # a test's recorder

    async def _call(self, query: str, variables: dict[str, Any]) -> dict[str, Any]:
        try:
            async with httpx.AsyncClient(timeout=self.timeout,
                                         transport=self.transport) as client:
                response = await client.post(self.url, json={"query": query,
                                                             "variables": variables})
        except httpx.HTTPError as exc:
            raise DagsterUnavailable(f"the Dagster webserver at {self.url} did not answer "
                                     f"({type(exc).__name__})") from exc
        if response.status_code != 200:
            raise DagsterUnavailable(f"the Dagster webserver answered {response.status_code}")
        try:
            body = response.json()
        except ValueError as exc:
            raise DagsterUnavailable("the Dagster webserver answered something not JSON") \
                from exc
        if not isinstance(body, dict) or body.get("errors") or not body.get("data"):
            errors = body.get("errors") if isinstance(body, dict) else None
            raise DagsterUnavailable(f"Dagster refused the request: "
                                     f"{(errors or [{}])[0].get('message')}")
        return body["data"]

    async def location(self) -> str:
        """The code location's name (the workspace has one)."""
        data = await self._call(LOCATIONS, {})
        entries = data["workspaceOrError"].get("locationEntries") or []
        if not entries:
            raise DagsterUnavailable("the Dagster workspace has no code location")
        return entries[0]["name"]

    async def reload(self, location: str) -> None:
        """Load the code location again, so definitions read the Studio's new trainings."""
        result = (await self._call(RELOAD, {"location": location}))["reloadRepositoryLocation"]
        loaded = result.get("locationOrLoadError") or {}
        if result["__typename"] != "WorkspaceLocationEntry" or loaded.get(
                "__typename") != "RepositoryLocation":
            message = result.get("message") or loaded.get("message") or "no location loaded"
            raise DagsterUnavailable(f"the code location did not reload: {message}")

    async def launch(self, location: str, assets: list[list[str]], tags: dict[str, str]
                     ) -> str:
        params = {
            "selector": {"repositoryLocationName": location, "repositoryName": REPOSITORY,
                         "pipelineName": ASSET_JOB,
                         "assetSelection": [{"path": path} for path in assets]},
            "mode": "default", "runConfigData": {},
            "executionMetadata": {"tags": [{"key": k, "value": v} for k, v in tags.items()]},
        }
        result = (await self._call(LAUNCH, {"params": params}))["launchRun"]
        if result["__typename"] != "LaunchRunSuccess":
            errors = result.get("errors") or [{}]
            message = result.get("message") or errors[0].get("message") or result["__typename"]
            raise DagsterUnavailable(f"Dagster did not launch the run: {message}")
        return result["run"]["runId"]

    async def runs(self, project: str, run_id: str | None = None) -> list[Run]:
        """The project's newest runs (or the one with `run_id`, if it is the project's)."""
        wanted: dict[str, Any] = {"tags": [{"key": PROJECT_TAG, "value": project}]}
        if run_id is not None:
            wanted["runIds"] = [run_id]
        data = await self._call(RUNS, {"filter": wanted})
        result = data["runsOrError"]
        if result["__typename"] != "Runs":
            raise DagsterUnavailable(f"Dagster did not list runs: {result.get('message')}")
        return [Run(r["runId"], r["status"], r["creationTime"], r["startTime"], r["endTime"],
                    {t["key"]: t["value"] for t in r["tags"]},
                    ["/".join(a["path"]) for a in r.get("assetSelection") or []],
                    r["stepStats"]) for r in result["results"]]

    async def run(self, project: str, run_id: str) -> Run | None:
        """The project's run with this id; None for a missing run or another project's."""
        return next(iter(await self.runs(project, run_id)), None)

    async def logs(self, run_id: str) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            result = (await self._call(LOGS, {"runId": run_id, "cursor": cursor}))["logsForRun"]
            if result["__typename"] != "EventConnection":
                raise DagsterUnavailable(f"Dagster did not return the log: "
                                         f"{result.get('message')}")
            events += result["events"]
            cursor = result["cursor"]
            if not result["hasMore"]:
                return events

    async def terminate(self, run_id: str) -> None:
        result = (await self._call(TERMINATE, {"runId": run_id}))["terminateRun"]
        if result["__typename"] != "TerminateRunSuccess":
            raise DagsterUnavailable(f"Dagster did not cancel the run: {result.get('message')}")
