"""`target: kubernetes` against a recording API server (no cluster runs here): what is sent,
in which order, and that each object is one `kubectl apply` would accept."""

from __future__ import annotations

import logging

import kubernetes_validate
import pytest

from config.deployments import KubernetesTarget
from resources.kubernetes_replicas import Cluster, RolloutTimeout, api_key_secret
from resources.vllm_launch import Artifact, GpuLaunch
from tests.support.fake_kubernetes import FakeKubernetes

LAUNCH = GpuLaunch("chat", Artifact("base", "s3://b/base/v1", "v1"), "s3://b", [8], 512, 4, [],
                   namespace="serving", replicas=2)


def test_apply_is_create_then_patch_and_waits_for_every_replica() -> None:
    api = FakeKubernetes(pods=[("10.1.0.7", 8000), ("10.1.0.8", 8000)])
    cluster = Cluster(KubernetesTarget(api_url=api.url, namespace="serving"))
    objects = [api_key_secret(LAUNCH.api_key_secret, "key"), *LAUNCH.kubernetes_objects()]
    assert [cluster.apply(o) for o in objects] == [
        "created Secret adapter-factory-vllm-api-key", "created Deployment vllm-chat",
        "created Service vllm-chat", "created NetworkPolicy vllm-chat"]
    assert [cluster.apply(o) for o in objects][1] == "patched Deployment vllm-chat"
    cluster.wait_for_rollout("vllm-chat", 2, logging.getLogger("test"))
    polls = [path for method, path, _ in api.requests if path.endswith("vllm-chat/status")]
    assert len(polls) == 2  # the first look saw no ready replica
    assert cluster.pod_urls("vllm-chat") == ["http://10.1.0.7:8000", "http://10.1.0.8:8000"]
    sent = [body for _, _, body in api.requests if body is not None]
    assert all(b["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "adapter-factory"
               for b in sent)
    for body in sent:
        kubernetes_validate.validate(body, "1.33.0", strict=True)
    deployment = api.sent("POST", "deployments")[0]
    assert deployment["spec"]["strategy"]["rollingUpdate"] == {"maxUnavailable": 0,
                                                               "maxSurge": 1}
    assert cluster.delete("vllm-chat") == ["Deployment vllm-chat", "Service vllm-chat",
                                           "NetworkPolicy vllm-chat"]
    assert cluster.delete("vllm-chat") == []  # already gone is not an error
    assert set(api.objects) == {("secrets", "adapter-factory-vllm-api-key")}


@pytest.mark.slow  # waits out the shortest rollout timeout, 10 s
def test_a_rollout_that_never_becomes_ready_fails_with_what_to_look_at() -> None:
    api = FakeKubernetes(pods=[])
    cluster = Cluster(KubernetesTarget(api_url=api.url, namespace="serving",
                                       rollout_timeout_s=10))
    cluster.apply(LAUNCH.kubernetes_objects()[0])
    api.polls_until_ready = 10**6
    with pytest.raises(RolloutTimeout, match=r"serving/vllm-chat: 0 of 2 replicas ready after "
                                             r"10s \(kubectl -n serving describe deployment"):
        cluster.wait_for_rollout("vllm-chat", 2, logging.getLogger("test"))
