"""Numbers for people: sizes, rates and durations in the short forms progress lines use."""

from __future__ import annotations

import math


def human_bytes(n: float) -> str:
    """Binary units with the IEC-less short names everyone reads (1 MB = 1024² bytes here)."""
    n = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{int(n)} B" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def human_rate(bytes_per_second: float | None) -> str:
    if bytes_per_second is None or bytes_per_second <= 0 or math.isnan(bytes_per_second):
        return "--"
    return f"{human_bytes(bytes_per_second)}/s"


def human_duration(seconds: float | None) -> str:
    if seconds is None or seconds < 0 or math.isinf(seconds) or math.isnan(seconds):
        return "--:--"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
