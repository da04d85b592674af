"""A deployment never mistakes another process on its port for its own vLLM server."""

from __future__ import annotations

import logging
import socket
from pathlib import Path

import pytest

from resources.vllm_replica import LoraStore
from resources.vllm_server import ServerStartError, VLLMServer

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_a_port_taken_by_another_process_is_an_error_not_a_healthy_server(
        tmp_path: Path) -> None:
    with socket.socket() as other:  # something else already listens there
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        vllm = VLLMServer(project_root=str(REPO_ROOT), state_dir=str(tmp_path))
        with pytest.raises(ServerStartError, match=f"127.0.0.1:{port} is in use by another "
                                                   "process.*deployments.<name>.port"):
            vllm.ensure("local", base_name="tiny", base_dir=tmp_path, base_version="v1",
                        adapters=[], lora_store=LoraStore(f"file://{tmp_path}"),
                        host="127.0.0.1", port=port, max_model_len=256,
                        max_loras=0, kv_cache_gib=1, extra_args=[], startup_timeout_s=10,
                        log=logging.getLogger("test"))
    assert vllm.state("local") is None  # nothing recorded as running
