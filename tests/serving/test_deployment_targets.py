"""The deployment targets' table: every target factory.yaml accepts has a module that rolls it
out and stops it, and each says where its replicas run."""

from typing import get_args

from assets.deployment_targets import TARGETS
from config.deployments import DeploymentSpec


def test_every_target_the_config_accepts_is_a_row_of_the_table() -> None:
    accepted = set(get_args(DeploymentSpec.model_fields["target"].annotation))
    assert accepted == set(TARGETS)


def test_each_target_says_where_its_replicas_run() -> None:
    specs = {"local": DeploymentSpec(base_model="tiny", port=8123),
             "hosts": DeploymentSpec(base_model="tiny", target="hosts",
                                     hosts=["http://10.0.0.5:8000", "http://10.0.0.6:8000"]),
             "kubernetes": DeploymentSpec(base_model="tiny", target="kubernetes", replicas=3)}
    where = {name: TARGETS[name].where(spec) for name, spec in specs.items()}
    assert where == {"local": "127.0.0.1:8123", "hosts": "the servers in hosts (2)",
                     "kubernetes": "3 pods in namespace default"}
