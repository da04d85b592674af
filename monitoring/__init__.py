"""Watching what is served (issue #44), without Dagster: drift of live prompts, and alerts."""
