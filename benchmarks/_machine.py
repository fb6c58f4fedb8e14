"""What the benchmark scripts record about the machine they ran on (imported by sibling scripts)."""

from __future__ import annotations

import platform
from pathlib import Path


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def peak_rss_mb() -> float:
    """This process's own peak resident memory in MB (``VmHWM``).

    Not ``ru_maxrss``: on Linux that survives fork + exec, so a side started by a
    parent holding a 1 GB corpus in memory would report the parent's size as its own.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class DescendantPeak:
    """The largest RSS of any process below this one, sampled in a thread every ``interval`` seconds.

    ``RUSAGE_CHILDREN`` only covers direct children that were waited for, so it misses
    workers started through a fork server (datatrove's local pool); sampling sees them
    all, at the cost of missing peaks shorter than ``interval``.

    Example::

        with DescendantPeak() as peak:
            run_the_side()
        print(peak.mb)
    """

    def __init__(self, interval: float = 0.5):
        import threading

        self.interval, self.mb = interval, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        import psutil

        me = psutil.Process()
        while not self._stop.wait(self.interval):
            for child in me.children(recursive=True):
                try:
                    self.mb = max(self.mb, child.memory_info().rss / 2**20)
                except psutil.Error:  # it ended between listing and reading
                    pass

    def __enter__(self) -> DescendantPeak:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
