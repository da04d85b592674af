"""The Pipes channel a worker job talks over: whatever the launcher that started it chose.

A local subprocess gets Dagster's default channels (a temp file); a remote box (EC2) cannot
reach the control plane's disk, so its launcher asks for messages in S3 by setting
`FACTORY_PIPES_CHANNEL=s3`. boto3 honours `AWS_ENDPOINT_URL_S3` for S3-compatible servers.
"""

from __future__ import annotations

import os

from dagster_pipes import PipesContext, PipesS3MessageWriter, open_dagster_pipes

CHANNEL_ENV = "FACTORY_PIPES_CHANNEL"


def open_pipes() -> PipesContext:
    if os.environ.get(CHANNEL_ENV) == "s3":
        import boto3

        return open_dagster_pipes(
            message_writer=PipesS3MessageWriter(boto3.client("s3"), interval=2))
    return open_dagster_pipes()
