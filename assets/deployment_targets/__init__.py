"""Where a deployment's vLLM servers run: one module per target, each bringing its replicas to
the promoted versions and stopping them, and this table that `deployments.<name>.target` in
factory.yaml looks up. Adding a target is a module here, a row below, and its name (with any
settings it takes) in config/deployments.py; the deployment asset and `factory stop` use the
table unchanged.
"""

from assets.deployment_targets.hosts import HostsTarget
from assets.deployment_targets.kubernetes import KubernetesTarget
from assets.deployment_targets.local import LocalTarget
from assets.deployment_targets.rollout import Target

TARGETS: dict[str, Target] = {target.name: target
                              for target in (LocalTarget(), HostsTarget(), KubernetesTarget())}
