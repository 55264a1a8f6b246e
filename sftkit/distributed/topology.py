"""The shape of a launch: processes per node, nodes, this node's rank, the rendezvous address."""

from __future__ import annotations

import re
from dataclasses import dataclass

from sftkit.errors import LaunchError

_HOST = re.compile(r"^[A-Za-z0-9_.:\-\[\]]+$")


@dataclass(frozen=True)
class Topology:
    nproc_per_node: int
    nnodes: int = 1
    node_rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: int = 29500

    def __post_init__(self) -> None:
        problems = []
        if self.nproc_per_node < 1:
            problems.append(f"--nproc must be at least 1, found {self.nproc_per_node}")
        if self.nnodes < 1:
            problems.append(f"--nnodes must be at least 1, found {self.nnodes}")
        if not 0 <= self.node_rank < max(self.nnodes, 1):
            problems.append(
                f"--node-rank must be in 0..{self.nnodes - 1} for {self.nnodes} node(s), "
                f"found {self.node_rank}"
            )
        if not 1 <= self.master_port <= 65535:
            problems.append(f"--master-port must be in 1..65535, found {self.master_port}")
        if not self.master_addr or not _HOST.match(self.master_addr):
            problems.append(f"--master-addr {self.master_addr!r} is not a host name or address")
        if self.nnodes > 1 and self.master_addr in ("127.0.0.1", "localhost", "::1"):
            problems.append(
                "--master-addr must be the address of node 0 that every node can reach when "
                f"--nnodes is {self.nnodes} (found {self.master_addr!r})"
            )
        if problems:
            raise LaunchError(
                "invalid launch options: " + "; ".join(problems) + ".",
                hint="See `sftkit launch --help` and docs/distributed.md.",
            )

    @property
    def world_size(self) -> int:
        return self.nproc_per_node * self.nnodes

    @property
    def is_first_node(self) -> bool:
        """Node 0 prepares the run directory; the other nodes only start their workers."""
        return self.node_rank == 0
