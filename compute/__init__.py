"""Where training boxes come from: one module per kind of machine, holding its settings (a
`RemoteSpec`) and its launcher, and this table that `compute.kind` in factory.yaml looks up.

Adding a kind of machine is one module here and one row below; config/compute_spec.py takes its
settings under `compute.<kind>` and resources/remote_compute.py runs jobs on it, unchanged.
"""

from __future__ import annotations

from compute.ec2 import Ec2Spec
from compute.gce import GceSpec
from compute.k8s import K8sSpec
from compute.machine import RemoteSpec

MACHINES: dict[str, type[RemoteSpec]] = {spec.kind: spec for spec in (Ec2Spec, GceSpec, K8sSpec)}
