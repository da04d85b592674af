"""Code that runs on the training box: Axolotl, lm-eval and dagster-pipes, never Dagster itself.

Each module is a `python -m worker.<job>` entry point that reads its parameters from the Pipes
extras and reports logs, metrics and results back over the Pipes protocol, so the same code runs
in a local subprocess, on an EC2/GCP instance or in a Kubernetes pod.
"""
