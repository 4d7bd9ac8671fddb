"""Show a run's events: live bars on a terminal, plain lines in logs, JSON lines for scripts.

All three are callables taking an ``Event``; they are called from worker threads, so each
takes its own lock. The bars are drawn by a small background thread a few times a second
rather than per event: with small chunks and ``--jobs`` the events come far faster than a
terminal (or a person) can usefully redraw. Terminal control is plain ANSI (cursor up, clear
line), which every terminal emulator in use understands; no curses, no dependency.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import IO, Any

from tusflow_client.events import Event
from tusflow_client.units import human_bytes, human_duration, human_rate


def display_name(path: str | None) -> str:
    """Relative to the working directory when under it: shorter, and what the user typed."""
    if not path:
        return ""
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return path
    return path if rel.startswith("..") else rel


class RateMeter:
    """Speed over the last few seconds, so ETA follows the network as it is now rather than
    the average since midnight."""

    def __init__(self, window: float = 8.0):
        self.window = window
        self.samples: deque[tuple[float, int]] = deque()

    def add(self, now: float, total: int) -> None:
        self.samples.append((now, total))
        while len(self.samples) > 2 and now - self.samples[1][0] > self.window:
            self.samples.popleft()

    def rate(self, now: float) -> float | None:
        if len(self.samples) < 2:
            return None
        t0, b0 = self.samples[0]
        t1, b1 = self.samples[-1]
        span = max(now, t1) - t0
        if span <= 0.05:
            return None
        return (b1 - b0) / span


@dataclass
class FileView:
    name: str
    size: int
    offset: int
    meter: RateMeter = field(default_factory=RateMeter)


class ProgressModel:
    """The numbers every renderer shows, updated from events."""

    def __init__(self) -> None:
        self.files_total = 0
        self.bytes_total = 0
        self.finished = 0
        self.failed = 0
        self.done_bytes = 0      # sizes of finished (uploaded/resumed/skipped) files
        self.failed_bytes = 0    # sizes of failed files: no longer part of the work
        self.moved = 0           # bytes acknowledged by the server in this run
        self.started_at = time.monotonic()
        self.active: dict[str, FileView] = {}
        self.meter = RateMeter()

    def apply(self, event: Event) -> None:
        d, now = event.data, time.monotonic()
        if event.kind == "discovered":
            self.files_total = int(d.get("files", 0)) + len(d.get("problems") or ())
            self.bytes_total = int(d.get("bytes", 0))
            self.meter.add(now, 0)
        elif event.kind == "start" and event.file:
            view = FileView(event.file, int(d.get("size", 0)), int(d.get("offset", 0)))
            view.meter.add(now, view.offset)
            self.active[event.file] = view
        elif event.kind == "progress" and event.file:
            view = self.active.get(event.file)
            if view is not None:
                offset = int(d.get("offset", view.offset))
                self.moved += max(0, offset - view.offset)
                view.offset = offset
                view.meter.add(now, offset)
                self.meter.add(now, self.moved)
        elif event.kind == "done":
            view = self.active.pop(event.file or "", None)
            size = int(d.get("size", view.size if view else 0))
            if view is not None:
                self.moved += max(0, size - view.offset)
                self.meter.add(now, self.moved)
            self.finished += 1
            self.done_bytes += size
        elif event.kind == "failed":
            self.active.pop(event.file or "", None)
            self.failed += 1
            self.failed_bytes += int(d.get("size", 0))

    def completed_bytes(self) -> int:
        return self.done_bytes + sum(v.offset for v in self.active.values())

    def work_bytes(self) -> int:
        return max(0, self.bytes_total - self.failed_bytes)

    def rate(self) -> float | None:
        return self.meter.rate(time.monotonic())

    def eta(self) -> float | None:
        rate = self.rate()
        left = self.work_bytes() - self.completed_bytes()
        if left <= 0:
            return 0.0
        return left / rate if rate else None


def _percent(done: int, total: int) -> float:
    return 100.0 if total <= 0 else min(100.0, 100.0 * done / total)


def describe_event(event: Event) -> str | None:
    """The permanent one-line form of an event, shared by the plain and terminal renderers;
    None for events that only move bars."""
    d, name = event.data, display_name(event.file)
    kind = event.kind
    if kind == "discovered":
        line = f"found {d.get('files', 0)} file(s), {human_bytes(d.get('bytes', 0))}"
        return line
    if kind == "server":
        limit = d.get("max_size")
        extra = f", max upload {human_bytes(limit)}" if limit else ""
        checksum = d.get("checksum") or "off"
        return f"endpoint {d.get('endpoint')} (tus {d.get('version')}, checksum {checksum}{extra})"
    if kind == "start":
        if d.get("resumed"):
            return f"resume   {name} at {human_bytes(d.get('offset', 0))} of {human_bytes(d.get('size', 0))}"
        return f"start    {name} ({human_bytes(d.get('size', 0))})"
    if kind == "retry":
        return (f"retry    {name}: {d.get('error')} (attempt {d.get('attempt')} of {d.get('of')}, "
                f"waiting {d.get('delay')}s)")
    if kind == "done":
        status = d.get("status")
        if status == "skipped":
            return f"skip     {name} (already on the server)"
        seconds = float(d.get("seconds") or 0)
        sent = int(d.get("sent", 0))
        speed = human_rate(sent / seconds) if seconds > 0 else "--"
        return f"done     {name} {status}, {human_bytes(d.get('size', 0))} in {seconds:.1f}s ({speed})"
    if kind == "failed":
        return f"FAILED   {name}: {d.get('error')}"
    if kind == "warning":
        return f"warning  {name + ': ' if name else ''}{d.get('message')}"
    if kind == "error":
        return f"error    {d.get('message')}"
    if kind == "media":
        state = d.get("state")
        bits = [f"media    {name}: {state}"]
        if state == "processing" and d.get("progress") is not None:
            bits.append(f"{float(d['progress']):.0f}%")
        if d.get("error"):
            bits.append(f"({d['error']})")
        return " ".join(bits)
    return None


class Renderer:
    def __init__(self, stream: IO[str]):
        self.stream = stream
        self.model = ProgressModel()
        self.lock = threading.Lock()
        self.media_states: dict[str, Any] = {}

    def __call__(self, event: Event) -> None:
        with self.lock:
            self.model.apply(event)
            self.handle(event)

    def handle(self, event: Event) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Finish drawing; called once, before the summary is printed."""

    def repeats_media_state(self, event: Event) -> bool:
        """A media event that only repeats the file's last state (the watcher polls): the
        line-based renderers say each state once."""
        if event.kind != "media":
            return False
        key, state = event.file or "", event.data.get("state")
        if self.media_states.get(key) == state:
            return True
        self.media_states[key] = state
        return False

    def write(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except (BrokenPipeError, ValueError):
            pass  # output closed (e.g. piped into `head`); the upload itself carries on


class JsonRenderer(Renderer):
    def handle(self, event: Event) -> None:
        self.write(json.dumps(event.to_json(), separators=(",", ":"), default=str) + "\n")


class PlainRenderer(Renderer):
    """Log-friendly: one line per thing that happened, and a totals line every ``interval``
    seconds while bytes move, so a log tail shows the run is alive."""

    def __init__(self, stream: IO[str], interval: float = 10.0):
        super().__init__(stream)
        self.interval = interval
        self.last_total = time.monotonic()

    def handle(self, event: Event) -> None:
        if self.repeats_media_state(event):
            return
        line = describe_event(event)
        if line:
            self.write(line + "\n")
        if event.kind == "progress" and time.monotonic() - self.last_total >= self.interval:
            self.last_total = time.monotonic()
            self.write(self.totals() + "\n")

    def totals(self) -> str:
        m = self.model
        done, work = m.completed_bytes(), m.work_bytes()
        return (f"progress {m.finished + m.failed}/{m.files_total} files, {_percent(done, work):.0f}% "
                f"({human_bytes(done)} of {human_bytes(work)}), {human_rate(m.rate())}, "
                f"ETA {human_duration(m.eta())}")


class TtyRenderer(Renderer):
    """Finished files scroll up as permanent lines; below them one bar per active file and a
    total bar, redrawn in place."""

    def __init__(self, stream: IO[str], refresh: float = 0.2, width: int | None = None):
        super().__init__(stream)
        self.refresh = refresh
        self.fixed_width = width
        self.pending: list[str] = []
        self.drawn = 0
        encoding = (getattr(stream, "encoding", None) or "").lower()
        self.fill, self.empty = ("█", "░") if "utf" in encoding else ("#", "-")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="progress", daemon=True)
        self.write("\x1b[?25l")  # hide the cursor while bars redraw
        self._thread.start()

    def handle(self, event: Event) -> None:
        if event.kind == "progress":
            return
        if self.repeats_media_state(event):
            return
        line = describe_event(event)
        if line:
            self.pending.append(line)

    def _loop(self) -> None:
        while not self._stop.wait(self.refresh):
            with self.lock:
                self._draw(bars=True)

    def close(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        self._thread.join(2)
        with self.lock:
            self._draw(bars=False)
            self.write("\x1b[?25h")

    def _width(self) -> int:
        return self.fixed_width or shutil.get_terminal_size((100, 24)).columns

    def _draw(self, bars: bool) -> None:
        width = max(40, self._width())
        out = [f"\x1b[{self.drawn}F" if self.drawn else "\r"]
        for line in self.pending:  # may wrap: they scroll away and are never redrawn
            out.append("\x1b[2K" + line + "\n")
        self.pending.clear()
        lines = self.bar_lines(width) if bars else []
        out.extend("\x1b[2K" + line + "\n" for line in lines)
        out.append("\x1b[J")
        self.drawn = len(lines)
        self.write("".join(out))

    def bar_lines(self, width: int) -> list[str]:
        m, now = self.model, time.monotonic()
        lines = []
        for view in list(m.active.values()):
            name = os.path.basename(view.name)
            rate = view.meter.rate(now)
            eta = (view.size - view.offset) / rate if rate else None
            lines.append(self._bar(name, view.offset, view.size, rate, eta, width))
        label = f"total {m.finished + m.failed}/{m.files_total}"
        lines.append(self._bar(label, m.completed_bytes(), m.work_bytes(), m.rate(), m.eta(), width))
        return lines

    def _bar(self, label: str, done: int, total: int, rate: float | None, eta: float | None, width: int) -> str:
        pct = _percent(done, total)
        tail = (f" {pct:5.1f}%  {human_bytes(done)}/{human_bytes(total)}  {human_rate(rate)}  "
                f"ETA {human_duration(eta)}")
        label_w = min(28, max(10, width // 4))
        label = label if len(label) <= label_w else "…" + label[-(label_w - 1):] if self.fill == "█" else label[-label_w:]
        bar_w = max(10, width - label_w - len(tail) - 4)
        filled = int(bar_w * pct / 100)
        return f"{label:<{label_w}} [{self.fill * filled}{self.empty * (bar_w - filled)}]{tail}"[: width - 1]
