"""``--wait``: follow each uploaded file's media item until it is ready or failed.

The URL comes from the ``Link: <...>; rel="media"`` header of the upload's completion (or of
a HEAD on a completed upload), so the client never guesses the API layout. The item is JSON
with ``state`` (queued, processing, ready, failed), ``progress`` (0..100 while processing) and
``error``. A 404 means this server has no media API (or not yet): after a short grace period
that item is reported as ``unavailable`` instead of being polled forever.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

import requests

from tusflow_client.events import Emit, Event
from tusflow_client.net import Timeouts, describe

FINAL_STATES = frozenset({"ready", "failed", "unavailable", "timeout", "unknown"})


@dataclass
class MediaStatus:
    file: str
    url: str | None
    state: str = "waiting"
    progress: float | None = None
    error: str | None = None
    eta: float | None = None

    @property
    def ok(self) -> bool:
        return self.state == "ready"


class MediaWatcher:
    def __init__(self, session: requests.Session, timeouts: Timeouts, emit: Emit, stop: threading.Event,
                 interval: float = 2.0, timeout: float | None = None, missing_grace: float = 10.0):
        self.session = session
        self.timeouts = timeouts
        self.emit = emit
        self.stop = stop
        self.interval = interval
        self.timeout = timeout
        self.missing_grace = missing_grace

    def follow(self, items: list[tuple[str, str | None]]) -> list[MediaStatus]:
        """Poll every item each ``interval`` until all are final, the timeout passes, or the
        run is stopped. Returns one status per item, in order."""
        statuses = [MediaStatus(file, url) for file, url in items]
        for status in statuses:
            if status.url is None:
                self._final(status, "unknown", "the server sent no media link for this upload")
        started = time.monotonic()
        missing_since: dict[int, float] = {}
        while True:
            pending = [s for s in statuses if s.state not in FINAL_STATES]
            if not pending:
                return statuses
            for status in pending:
                self._poll(status, missing_since)
            if all(s.state in FINAL_STATES for s in statuses):
                return statuses
            if self.timeout is not None and time.monotonic() - started >= self.timeout:
                for status in statuses:
                    if status.state not in FINAL_STATES:
                        self._final(status, "timeout", f"still {status.state} after {self.timeout:g}s")
                return statuses
            if self.stop.wait(self.interval):
                for status in statuses:
                    if status.state not in FINAL_STATES:
                        self._final(status, "unknown", "stopped waiting (interrupted)")
                return statuses

    def _poll(self, status: MediaStatus, missing_since: dict[int, float]) -> None:
        assert status.url is not None
        try:
            resp = self.session.get(status.url, timeout=self.timeouts.pair(), headers={"Accept": "application/json"})
        except requests.RequestException as exc:
            self._change(status, status.state, status.progress, f"cannot reach media API: {describe(exc)}")
            return
        if resp.status_code == 404:
            first = missing_since.setdefault(id(status), time.monotonic())
            if time.monotonic() - first >= self.missing_grace:
                self._final(status, "unavailable", f"GET {status.url} answered 404: this server has no media API")
            return
        missing_since.pop(id(status), None)
        if resp.status_code in (401, 403):
            self._final(status, "unknown", f"GET {status.url} answered {resp.status_code}; check --token")
            return
        if resp.status_code != 200:
            self._change(status, status.state, status.progress, f"media API answered {resp.status_code}")
            return
        try:
            body: Any = resp.json()
            state = str(body["state"]).lower()
        except (ValueError, KeyError, TypeError):
            self._final(status, "unknown", f"GET {status.url} did not answer media JSON with a state")
            return
        progress = body.get("progress")
        progress = float(progress) if isinstance(progress, (int, float)) else None
        eta = body.get("eta_seconds")
        status.eta = float(eta) if isinstance(eta, (int, float)) and state == "processing" else None
        error = body.get("error") if state == "failed" else None
        self._change(status, state, progress, str(error) if error else None)

    def _final(self, status: MediaStatus, state: str, error: str | None) -> None:
        self._change(status, state, status.progress, error)

    def _change(self, status: MediaStatus, state: str, progress: float | None, error: str | None) -> None:
        if (status.state, status.progress, status.error) == (state, progress, error):
            return
        status.state, status.progress, status.error = state, progress, error
        self.emit(Event("media", status.file, {"state": state, "progress": progress, "eta": status.eta,
                                               "error": error, "url": status.url}))
