"""Peak resident memory (RSS) of this process over a block of code, e.g. one training run.

Linux keeps a high-water mark of resident memory (VmHWM in /proc/self/status) that
writing "5" to /proc/self/clear_refs resets to the current RSS, so the peak of one run is
exact even in a long-lived process such as the dashboard. Where that is not possible
(another OS, a locked-down /proc) the process's lifetime peak from getrusage is reported,
marked as such.
"""

from __future__ import annotations

import resource
import sys
from pathlib import Path

STATUS, CLEAR_REFS = Path("/proc/self/status"), Path("/proc/self/clear_refs")


def _status_kib(field: str) -> int | None:
    try:
        for line in STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def lifetime_peak_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB on Linux


class PeakRSS:
    """`with PeakRSS() as peak: ...` then `peak.bytes` (and `peak.scope`: "run" or "process")."""

    def __enter__(self) -> PeakRSS:
        try:
            CLEAR_REFS.write_text("5")
            self.scope = "run" if _status_kib("VmHWM") is not None else "process"
        except OSError:
            self.scope = "process"
        self.bytes = 0
        return self

    def read(self) -> int:
        hwm = _status_kib("VmHWM") if self.scope == "run" else None
        return hwm * 1024 if hwm is not None else lifetime_peak_bytes()

    def __exit__(self, *exc) -> None:
        self.bytes = self.read()
