"""The gateway's admin API as the control plane reads it: usage per day, project and key, the
traffic per model (what hot_adapters weighs), the feedback datasets are made from, and the purge
of kept chats an erasure asks for. Two programs, one contract: the control plane
never opens the gateway's database."""

from typing import Any

import httpx

from config.gateway import GatewaySettings

PURGE_PHRASES = 1000  # what one purge call of the admin API takes


class GatewayUnavailable(RuntimeError):
    """The gateway could not answer; the message says which setting or step fixes it."""


class GatewayAdmin:
    def __init__(self, settings: GatewaySettings, timeout_s: float = 30) -> None:
        self.url, self.timeout_s = settings.base_url, timeout_s
        self.token, self.token_env = settings.admin_token, settings.admin_token_env

    def get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        return self.call("GET", path, params)

    def call(self, method: str, path: str, params: dict[str, Any] | None = None,
             body: dict[str, Any] | None = None) -> Any:
        if not self.token:
            raise GatewayUnavailable(
                f"reading {path} from the gateway's admin API needs its admin token: set "
                f"{self.token_env} (gateway.admin_token_env) as the gateway has it")
        try:
            response = httpx.request(method, f"{self.url}/admin{path}", params=params,
                                     json=body, timeout=self.timeout_s,
                                     headers={"authorization": f"Bearer {self.token}"})
        except httpx.HTTPError as exc:
            raise GatewayUnavailable(
                f"the gateway at {self.url} did not answer {path} ({exc}); start it "
                "(`factory-gateway serve`, or `factory demo`) or set gateway.url to where it "
                "runs") from exc
        if response.status_code != 200:
            raise GatewayUnavailable(
                f"the gateway at {self.url} answered {path} with {response.status_code}: "
                f"{response.text[:300]}")
        return response.json()

    def usage(self) -> list[dict[str, Any]]:
        """Requests, tokens and audio seconds per day, project and key."""
        return self.get("/usage")

    def traffic_by_model(self, since: float) -> dict[str, dict[str, int]]:
        """Answered requests and generated tokens per model since `since` (epoch seconds)."""
        return self.get("/traffic", {"since": repr(since)})["models"]

    def feedback(self, project: str, model: str | None, since: float, after: int
                 ) -> dict[str, Any]:
        """One page of a project's feedback with the chats it is about (ingest/traffic.py)."""
        params = {"since": repr(since), "after": str(after)}
        return self.get(f"/projects/{project}/feedback",
                        params | ({"model": model} if model else {}))

    def feedback_count(self, project: str, model: str | None) -> dict[str, int]:
        """How much feedback the project has (on `model`): what the feedback sensor polls."""
        return self.get(f"/projects/{project}/feedback/count",
                        {"model": model} if model else None)

    def purge_completions(self, contains: list[str], user: str | None = None,
                          dry_run: bool = False) -> dict[str, Any]:
        """Erasure: stored completions naming any of `contains` (or made by `user`) and their
        feedback, in every project; asked in parts of at most PURGE_PHRASES phrases, the
        answers added up."""
        parts = [contains[i:i + PURGE_PHRASES] for i in range(0, len(contains),
                                                               PURGE_PHRASES)] or [[]]
        total: dict[str, Any] = {"completions": 0, "feedback": 0, "data": []}
        for part in parts:
            done = self.call("POST", "/completions/purge", body={
                "contains": part, "user": user, "dry_run": dry_run})
            for field in ("completions", "feedback", "data"):
                total[field] += done[field]
        return total

    def monitor(self, since: float, until: float, window_s: int, models: list[str]
                ) -> dict[str, Any]:
        """Per model and window: what the gateway measured (gateway/monitoring.py)."""
        return self.get("/monitor", {"since": repr(since), "until": repr(until),
                                     "window": str(window_s), "model": models})

    def monitor_prompts(self, models: list[str], since: float, limit: int) -> list[str]:
        """The last user turn of the newest kept chats of `models`."""
        return self.get("/monitor/prompts", {"model": models, "since": repr(since),
                                             "limit": str(limit)})["data"]
