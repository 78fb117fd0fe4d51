"""Peak memory of one benchmark run: resident set size sampled by a thread, and CUDA's own peak counter."""

from __future__ import annotations

import os
import threading


def rss_bytes() -> int:
    """Current resident set size of this process (Linux /proc; 0 where it cannot be read)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


class PeakMemory:
    """``with PeakMemory(device) as peak: ...`` then ``peak.rss`` and ``peak.gpu`` (bytes; gpu None off CUDA).

    RSS is sampled every ``interval`` seconds (the process-lifetime ru_maxrss
    cannot be reset between grid points); the CUDA figure is
    ``torch.cuda.max_memory_allocated`` after a reset, exact.
    """

    def __init__(self, device: str = "cpu", interval: float = 0.005) -> None:
        self.device = device
        self.interval = interval
        self.rss = 0
        self.gpu: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self.rss = max(self.rss, rss_bytes())

    def __enter__(self) -> "PeakMemory":
        self.rss = rss_bytes()
        if self.device == "cuda":
            import torch

            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.rss = max(self.rss, rss_bytes())
        if self.device == "cuda":
            import torch

            torch.cuda.synchronize()
            self.gpu = int(torch.cuda.max_memory_allocated())
