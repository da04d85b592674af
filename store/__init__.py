"""The object store, on the ground floor: where each thing lives (keys.py), the local and S3
backends (backends.py), the verified reader (reader.py), S3 locations and listings (s3.py) and
safe local paths (paths.py).
Dagster-free, so the control plane's resource, the gateway, the training box and a vLLM
replica's resolver all share one copy."""
