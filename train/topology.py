"""The process layout of a run: how many processes per node, how many nodes, which launcher starts them, and which
process leads (keeps the manifest, prepares data, verifies, evaluates)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal


@dataclass(frozen=True)
class Launch:
    """How many processes run one stage, where they rendezvous, and which launcher starts them."""

    nproc_per_node: int = 1
    nnodes: int = 1
    node_rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: int = 29500
    launcher: Literal["torchrun", "deepspeed"] = "torchrun"
    """``torchrun``: every node runs the same command (node 0 leads, see ``multinode``); ``deepspeed``: node 0
    alone starts every rank over ssh from a hostfile."""
    hostfile: str | None = None
    """DeepSpeed hostfile (``host slots=N`` per line); only with the deepspeed launcher."""
    bind_cores: bool = False
    """Pin each rank to its own CPU cores: faster CPU-offloaded optimizer steps (DeepSpeed's cpu_adam)."""

    def __post_init__(self) -> None:
        # A zero or negative count would plan a world of size 0 and fail later on a bare assertion.
        for name in ("nproc_per_node", "nnodes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not 0 <= self.node_rank < self.nnodes:
            raise ValueError(f"node_rank {self.node_rank} is outside 0..{self.nnodes - 1}")

    @property
    def world_size(self) -> int:
        return self.nproc_per_node * self.nnodes

    @property
    def leads(self) -> bool:
        """Node 0 owns the run (data, manifest, markers, verification, eval); other torchrun nodes follow it.
        With the deepspeed launcher there is only node 0: it starts every rank itself."""
        return self.launcher == "deepspeed" or self.node_rank == 0

    @property
    def multi_node_torchrun(self) -> bool:
        """Several torchrun nodes, each running spinegpt: node 0 and its followers coordinate through markers."""
        return self.launcher == "torchrun" and self.nnodes > 1


def read_hostfile(path: str) -> list[tuple[str, int]]:
    """(host, slots) pairs of a DeepSpeed hostfile; blank lines and # comments ignored."""
    hosts = []
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        match = re.match(r"^(\S+)\s+slots=(\d+)$", line)
        if not match:
            raise ValueError(f"{path}:{number}: expected 'hostname slots=N', got {line!r}")
        hosts.append((match.group(1), int(match.group(2))))
    if not hosts:
        raise ValueError(f"{path}: no hosts")
    return hosts


def launch_from_env(
    nproc: int | None = None, launcher: str = "torchrun", hostfile: str | None = None, bind_cores: bool = False
) -> Launch:
    """Process layout from the arguments and the standard torchrun variables (set by launch/ scripts and SLURM).

    With the deepspeed launcher the hostfile decides: one node per host, ``slots`` processes on each."""
    env = os.environ
    if launcher == "deepspeed":
        if not hostfile:
            raise ValueError("--launcher deepspeed needs --hostfile")
        hosts = read_hostfile(hostfile)
        slots = {n for _, n in hosts}
        if len(slots) != 1:
            raise ValueError(f"{hostfile}: every host needs the same number of slots, got {sorted(slots)}")
        return Launch(
            nproc_per_node=slots.pop(),
            nnodes=len(hosts),
            master_addr=env.get("MASTER_ADDR", hosts[0][0]),
            master_port=int(env.get("MASTER_PORT", "29500")),
            launcher="deepspeed",
            hostfile=str(Path(hostfile).resolve()),
            bind_cores=bind_cores,
        )
    return Launch(
        nproc_per_node=nproc if nproc is not None else int(env.get("NPROC_PER_NODE", "1")),
        nnodes=int(env.get("NNODES", "1")),
        node_rank=int(env.get("NODE_RANK", "0")),
        master_addr=env.get("MASTER_ADDR", "127.0.0.1"),
        master_port=int(env.get("MASTER_PORT", "29500")),
        bind_cores=bind_cores,
    )
