"""Gateway usage as an asset: requests and tokens per day, project and key, from the audit log.

Read through the gateway's admin API (`/admin/usage`, what `factory-gateway usage` prints), so
usage sits in the graph beside the deployments it measures (scheduled, plotted and checked like
everything else) while the gateway's database stays the gateway's.
"""

import json
import time

import dagster as dg

from assets.common import Definition
from config.schema import FactoryConfig
from resources.gateway_admin import GatewayAdmin

USAGE = dg.AssetKey(["gateway", "usage"])


def usage_asset(config: FactoryConfig) -> list[Definition]:
    settings = config.gateway_settings

    @dg.asset(key=USAGE, group_name="serving", kinds={"fastapi"},
              description="Requests and tokens per day, project and key (the gateway's audit "
                          f"log, through {settings.base_url}/admin/usage).")
    def _usage(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        rows = GatewayAdmin(settings).usage()
        out = config.work_dir / "runs" / "usage"
        out.mkdir(parents=True, exist_ok=True)
        partial = out / "usage.json.partial"
        partial.write_text(json.dumps(rows, indent=1))
        partial.replace(out / "usage.json")
        table = ["| day | project | key | requests | prompt tokens | completion tokens |",
                 "|---|---|---|---|---|---|"]
        table += [f"| {r['day']} | {r['project']} | {r['key_id']} | {r['requests']} | "
                  f"{r['prompt_tokens']} | {r['completion_tokens']} |" for r in rows]
        context.log.info(f"{len(rows)} day/project/key rows of gateway usage")
        return dg.MaterializeResult(metadata={
            "requests": sum(r["requests"] for r in rows),
            "prompt_tokens": sum(r["prompt_tokens"] for r in rows),
            "completion_tokens": sum(r["completion_tokens"] for r in rows),
            "projects": len({r["project"] for r in rows}),
            "by_day_project_key": dg.MetadataValue.md("\n".join(table)),
            "gateway": dg.MetadataValue.url(f"{settings.base_url}/admin/usage"),
            "file": dg.MetadataValue.path(str(out / "usage.json")),
            "as_of": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        })

    return [_usage]
