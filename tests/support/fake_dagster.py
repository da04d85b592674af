"""A stand-in for the Dagster webserver in the Studio's fast tests: it records every reload,
launch and termination the gateway asks for (the exact assets and tags), and answers run
listings from what was launched. The slow tests use the real webserver and daemon."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from gateway.studio.dagster import PROJECT_TAG, Run


@dataclass
class Launch:
    location: str
    assets: list[list[str]]
    tags: dict[str, str]
    run_id: str


@dataclass
class RecordingDagster:
    location_name: str = "factory"
    reloads: list[str] = field(default_factory=list)
    launches: list[Launch] = field(default_factory=list)
    terminated: list[str] = field(default_factory=list)
    status: dict[str, str] = field(default_factory=dict)
    log_lines: dict[str, list[str]] = field(default_factory=dict)
    step_stats: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    async def location(self) -> str:
        return self.location_name

    async def reload(self, location: str) -> None:
        self.reloads.append(location)

    async def launch(self, location: str, assets: list[list[str]], tags: dict[str, str]
                     ) -> str:
        run_id = str(uuid.uuid4())
        self.launches.append(Launch(location, assets, tags, run_id))
        self.status[run_id] = "QUEUED"
        return run_id

    async def runs(self, project: str) -> list[Run]:
        return [Run(launch.run_id, self.status[launch.run_id], time.time(), None, None,
                    launch.tags, ["/".join(a) for a in launch.assets],
                    self.step_stats.get(launch.run_id, []))
                for launch in reversed(self.launches) if launch.tags[PROJECT_TAG] == project]

    async def run(self, project: str, run_id: str) -> Run | None:
        return next((r for r in await self.runs(project) if r.run_id == run_id), None)

    failures: dict[str, str] = field(default_factory=dict)

    async def logs(self, run_id: str) -> list[dict[str, Any]]:
        events = [{"__typename": "LogMessageEvent", "message": line, "timestamp": str(i),
                   "level": "INFO", "stepKey": "adapter"}
                  for i, line in enumerate(self.log_lines.get(run_id, []))]
        if run_id in self.failures:
            events.append({"__typename": "ExecutionStepFailureEvent", "level": "ERROR",
                           "message": 'Execution of step "adapter" failed.',
                           "stepKey": "adapter", "timestamp": "9",
                           "error": {"message": self.failures[run_id]}})
        return events

    async def terminate(self, run_id: str) -> None:
        self.terminated.append(run_id)
        self.status[run_id] = "CANCELING"
