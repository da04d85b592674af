"""Gateway usage as an asset: requests and tokens per day, project and key, from the audit log.

The same query as `factory-gateway usage`, materialized so usage sits in the graph beside the
deployments it measures (and can be scheduled, plotted and checked like everything else).
"""

import json
import time

import dagster as dg

from assets.common import Definition
from config.schema import FactoryConfig
from gateway.db import make_engine, session_factory
from gateway.tenancy import Tenancy


def usage_asset(config: FactoryConfig) -> list[Definition]:
    @dg.asset(key=["gateway", "usage"], group_name="serving", kinds={"sqlalchemy"},
              description="Requests and tokens per day, project and key (gateway audit log).")
    def _usage(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        from sqlalchemy.engine import make_url

        settings = config.gateway_settings
        engine = make_engine(settings.database_url)
        rows = Tenancy(session_factory(engine), settings.default_rpm, settings.default_tpm,
                       cache_seconds=0).usage()
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
            "database": make_url(settings.database_url).render_as_string(hide_password=True),
            "file": dg.MetadataValue.path(str(out / "usage.json")),
            "as_of": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        })

    return [_usage]
