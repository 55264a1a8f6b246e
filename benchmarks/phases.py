"""Peak memory per phase of a training run: what the estimator predicts, measured.

On CUDA each phase records three peaks, because each sees a different part of the truth:

* ``peak_allocated``: ``torch.cuda.max_memory_allocated``, the bytes of live tensors;
* ``peak_reserved``: ``torch.cuda.max_memory_reserved``, what the caching allocator holds
  (live tensors plus fragmentation and cached blocks);
* ``peak_device_used``: total minus free from ``torch.cuda.mem_get_info`` (the driver's view,
  as NVML reports it), sampled every few milliseconds by a thread. Only this one sees the CUDA
  context, library workspaces and bitsandbytes' paged optimizer state (unified memory the
  torch allocator never handles).

On CPU the CUDA fields are None and ``host_max_rss`` (the process's high-water resident set,
cumulative over the run) is the only memory figure: it checks that the harness works, it is
not a GPU measurement.
"""

from __future__ import annotations

import contextlib
import resource
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any

SAMPLE_SECONDS = 0.005


@dataclass
class PhaseMemory:
    phase: str
    seconds: float
    peak_allocated: int | None = None
    peak_reserved: int | None = None
    peak_device_used: int | None = None
    end_allocated: int | None = None
    host_max_rss: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def host_max_rss_bytes() -> int:
    # ru_maxrss is in KiB on Linux.
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


class _DeviceSampler(threading.Thread):
    """Polls the driver's used-memory figure and keeps the maximum since the last reset."""

    def __init__(self, torch: Any, device_index: int) -> None:
        super().__init__(name="device-memory-sampler", daemon=True)
        self._torch = torch
        self._device = device_index
        self._stop_event = threading.Event()
        self._lock = threading.Lock()
        self._peak = self.used()

    def used(self) -> int:
        free, total = self._torch.cuda.mem_get_info(self._device)
        return int(total - free)

    def run(self) -> None:
        while not self._stop_event.wait(SAMPLE_SECONDS):
            value = self.used()
            with self._lock:
                self._peak = max(self._peak, value)

    def take_peak(self) -> int:
        """The peak since the last call (including the present value), then reset."""
        value = self.used()
        with self._lock:
            peak = max(self._peak, value)
            self._peak = value
        return peak

    def stop(self) -> None:
        self._stop_event.set()


class PhaseMeter:
    """Starts and ends named phases; `records` holds one `PhaseMemory` per ended phase.

    `current` names the phase in progress, so an out-of-memory error can be attributed to it.
    Phases are sequential: starting one ends the previous one. A phase run several times
    (each later training step) is one record: the maximum of its peaks, the sum of its time.
    """

    def __init__(self, device: str) -> None:
        self.device = device
        self.records: list[PhaseMemory] = []
        self.current: str | None = None
        self._started = 0.0
        self._torch: Any = None
        self._sampler: _DeviceSampler | None = None
        if device.startswith("cuda"):
            import torch

            self._torch = torch
            index = torch.device(device).index
            self._index = torch.cuda.current_device() if index is None else index
            torch.cuda.init()
            self._sampler = _DeviceSampler(torch, self._index)
            self._sampler.start()

    @property
    def cuda(self) -> bool:
        return self._torch is not None

    def device_used(self) -> int | None:
        return self._sampler.used() if self._sampler is not None else None

    def start(self, phase: str) -> None:
        if self.current is not None:
            self.end()
        self.current = phase
        self._started = time.perf_counter()
        if self._torch is not None:
            self._torch.cuda.synchronize(self._index)
            self._torch.cuda.reset_peak_memory_stats(self._index)
            assert self._sampler is not None
            self._sampler.take_peak()

    def end(self) -> PhaseMemory:
        if self.current is None:
            raise RuntimeError("no phase in progress")
        record = PhaseMemory(phase=self.current, seconds=0.0, host_max_rss=host_max_rss_bytes())
        if self._torch is not None:
            cuda = self._torch.cuda
            # After a failed kernel synchronize raises; the counters are still readable.
            with contextlib.suppress(RuntimeError):
                cuda.synchronize(self._index)
            record.peak_allocated = int(cuda.max_memory_allocated(self._index))
            record.peak_reserved = int(cuda.max_memory_reserved(self._index))
            record.end_allocated = int(cuda.memory_allocated(self._index))
            assert self._sampler is not None
            record.peak_device_used = self._sampler.take_peak()
        record.seconds = round(time.perf_counter() - self._started, 4)
        self.current = None
        for i, old in enumerate(self.records):
            if old.phase == record.phase:  # a repeated phase (later steps) folds into one
                record = PhaseMemory(
                    phase=record.phase,
                    seconds=round(old.seconds + record.seconds, 4),
                    peak_allocated=_max(old.peak_allocated, record.peak_allocated),
                    peak_reserved=_max(old.peak_reserved, record.peak_reserved),
                    peak_device_used=_max(old.peak_device_used, record.peak_device_used),
                    end_allocated=record.end_allocated,
                    host_max_rss=_max(old.host_max_rss, record.host_max_rss),
                )
                self.records[i] = record
                return record
        self.records.append(record)
        return record

    def close(self) -> None:
        if self._sampler is not None:
            self._sampler.stop()

    def as_dict(self) -> dict[str, dict[str, Any]]:
        return {r.phase: r.to_dict() for r in self.records}


def _max(a: int | None, b: int | None) -> int | None:
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b)
