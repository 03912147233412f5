"""ms-swift's own OpenAI-compatible server (``swift deploy``) on a local model, for tests that need a real one: started
offline on CPU, waited for until it answers, stopped with its whole process group."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "USE_HF": "1"}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def deploy_command(model: Path, port: int, served_name: str) -> list[str]:
    """The arguments DeployArguments (swift/arguments/deploy_args.py, with InferArguments and the model arguments it
    extends) takes for a Qwen2.5-VL folder on CPU: float32 and sdpa (no bf16 kernels, no flash-attn there)."""
    return [
        sys.executable,
        "-m",
        "swift.cli.deploy",
        "--model",
        str(model),
        "--model_type",
        "qwen2_5_vl",
        "--template",
        "qwen2_5_vl",
        "--infer_backend",
        "transformers",
        "--torch_dtype",
        "float32",
        "--attn_impl",
        "sdpa",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--served_model_name",
        served_name,
        "--verbose",
        "false",
        "--log_interval",
        "-1",
    ]


@contextmanager
def swift_deploy(model: Path, log: Path, served_name: str = "tiny-teacher", timeout_s: float = 600) -> Iterator[str]:
    """Serve ``model`` with ``swift deploy``; yields the API root (``http://127.0.0.1:PORT/v1``) once
    ``/v1/models`` lists ``served_name``."""
    env = {**os.environ, **OFFLINE, "CUDA_VISIBLE_DEVICES": ""}
    with log.open("w") as out:
        process = subprocess.Popen(
            deploy_command(model, _free_port(), served_name),
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    try:
        yield _ready(process, log, served_name, timeout_s)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _ready(process: subprocess.Popen[bytes], log: Path, served_name: str, timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"swift deploy exited with {process.returncode}:\n{log.read_text()[-4000:]}")
        # DeployArguments moves to another port when the one given is taken: read the one uvicorn bound.
        bound = re.search(r"Uvicorn running on http://127\.0\.0\.1:(\d+)", log.read_text(errors="replace"))
        if bound:
            url = f"http://127.0.0.1:{bound.group(1)}/v1"
            try:
                with urllib.request.urlopen(f"{url}/models", timeout=5) as response:
                    listed = [m["id"] for m in json.loads(response.read())["data"]]
                if served_name in listed:
                    return url
            except OSError:
                pass
        time.sleep(1)
    raise RuntimeError(f"swift deploy not ready within {timeout_s:g}s:\n{log.read_text()[-4000:]}")
