"""Parse ffmpeg's ``-progress`` key=value stream into percent and ETA.

Kept pure (lines in, numbers out) so the arithmetic is unit-tested without ffmpeg. ffmpeg
prints one block of ``key=value`` lines per report and closes each block with
``progress=continue`` or ``progress=end``; ``out_time_us`` is microseconds of output written
(``out_time_ms`` is, despite its name, also microseconds), ``speed`` is like ``" 2.5x"``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ProgressSnapshot:
    out_time: float | None   # seconds of media written so far
    speed: float | None      # media seconds per wall second
    finished: bool


class ProgressParser:
    """Collects one block of lines; ``feed`` returns a snapshot when a block closes."""

    def __init__(self) -> None:
        self._fields: dict[str, str] = {}

    def feed(self, line: str) -> ProgressSnapshot | None:
        key, sep, value = line.strip().partition("=")
        if not sep:
            return None
        key, value = key.strip(), value.strip()
        if key != "progress":
            self._fields[key] = value
            return None
        fields, self._fields = self._fields, {}
        return ProgressSnapshot(out_time=_out_time(fields), speed=_speed(fields.get("speed")),
                                finished=value == "end")


def _out_time(fields: dict[str, str]) -> float | None:
    for key in ("out_time_us", "out_time_ms"):
        try:
            micros = int(fields[key])
        except (KeyError, ValueError):
            continue
        return max(0.0, micros / 1_000_000)
    clock = fields.get("out_time", "")
    try:
        hours, minutes, seconds = clock.split(":")
        return max(0.0, int(hours) * 3600 + int(minutes) * 60 + float(seconds))
    except ValueError:
        return None


def _speed(raw: str | None) -> float | None:
    if not raw:
        return None
    try:
        speed = float(raw.rstrip("x").strip())
    except ValueError:
        return None
    return speed if speed > 0 else None


def estimate(snapshot: ProgressSnapshot, duration: float,
             elapsed: float | None = None) -> tuple[float, float | None]:
    """(percent 0..100, ETA seconds or None). Without a speed from ffmpeg (it prints N/A at
    first) the speed so far is used when the wall time ``elapsed`` is known."""
    if snapshot.finished:
        return 100.0, 0.0
    if snapshot.out_time is None or duration <= 0:
        return 0.0, None
    done = min(snapshot.out_time, duration)
    percent = min(100.0, max(0.0, 100.0 * done / duration))
    speed = snapshot.speed
    if speed is None and elapsed and elapsed > 0 and done > 0:
        speed = done / elapsed
    eta = (duration - done) / speed if speed else None
    return percent, eta
