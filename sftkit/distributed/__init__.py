"""Scale-out on engines people already trust: DDP, FSDP and DeepSpeed through accelerate.

The recipe's ``distributed`` section is the one source of truth. From it this package
generates the accelerate configuration and the DeepSpeed JSON (``configs``), the keyword
arguments the runner passes to the trainer (``trainer``), and the launch command for
``accelerate launch`` or ``torchrun`` (``launch``). ``rank`` tells a process whether it is
the one that writes. Everything here except ``cpu_fsdp`` is torch-free. Running a launch
(planning it, preparing the run, the per-rank worker) is `sftkit.launch`, above training.
"""

from sftkit.distributed.rank import is_main_process, local_rank, rank, world_size
from sftkit.distributed.topology import Topology

__all__ = ["Topology", "is_main_process", "local_rank", "rank", "world_size"]
