"""One ``tusflow upload`` run: discover, probe, upload in parallel, summarize, optionally wait.

Everything that can make the whole run pointless (no files, endpoint unreachable or not tus,
state file in use) is checked before the first byte is sent, so an overnight job fails in the
first second, not at 3 a.m. After that, problems are per file: a failed file is reported and
the batch goes on.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, Iterator

from tusflow_client.discovery import discover
from tusflow_client.events import Emit, Event
from tusflow_client.media import MediaStatus, MediaWatcher
from tusflow_client.net import new_session
from tusflow_client.progress import (JsonRenderer, PlainRenderer, TtyRenderer, Renderer, describe_event,
                                          display_name)
from tusflow_client.server import EndpointError, ServerInfo, probe
from tusflow_client.state import StateError, StateFile
from tusflow_client.summary import EXIT_INTERRUPTED, EXIT_UNUSABLE, Summary, exit_status
from tusflow_client.transfer import FAILED, NOT_STARTED, FileResult, Transfer, TransferOptions
from tusflow_client.units import human_bytes


@dataclass(frozen=True)
class RunOptions:
    paths: tuple[str, ...]
    endpoint: str
    state_file: Path
    extensions: frozenset[str]
    jobs: int = 2
    output: str = "auto"            # auto (bars on a terminal, else plain), plain, json
    wait: bool = False
    wait_timeout: float | None = None
    wait_interval: float = 2.0
    transfer: TransferOptions = field(default_factory=TransferOptions)


class Run:
    def __init__(self, options: RunOptions, stdout: IO[str] | None = None, stderr: IO[str] | None = None):
        self.options = options
        self.stdout = stdout or sys.stdout
        self.stderr = stderr or sys.stderr
        self.stop = threading.Event()
        self.json = options.output == "json"
        self.renderer = self._renderer()

    def _renderer(self) -> Renderer:
        mode = self.options.output
        if mode == "json":
            return JsonRenderer(self.stdout)
        if mode == "tty" or (mode == "auto" and _isatty(self.stdout)):
            return TtyRenderer(self.stdout)
        return PlainRenderer(self.stdout)

    # ------------------------------------------------------------------ entry point
    def execute(self) -> int:
        with self._signals():
            try:
                return self._execute()
            except KeyboardInterrupt:  # outside the upload phase: nothing is in flight
                self.stop.set()
                self.renderer.close()
                print("tusflow upload: interrupted", file=self.stderr, flush=True)
                return EXIT_INTERRUPTED
            finally:
                self.renderer.close()

    def fatal(self, message: str) -> int:
        """The run cannot go on: say so on stderr (and as an event for --json readers)."""
        if self.json:
            self.renderer(Event("error", data={"message": message}))
        self.renderer.close()
        print(f"tusflow upload: {message}", file=self.stderr, flush=True)
        return EXIT_UNUSABLE

    def _execute(self) -> int:
        o = self.options
        started = time.monotonic()
        found = discover(o.paths, o.extensions)
        sizes = {path: _size(path) for path in found.files}
        self.renderer(Event("discovered", data={"files": len(found.files),
                                                "bytes": sum(sizes.values()),
                                                "problems": [{"path": p, "error": e} for p, e in found.problems]}))
        for argument, message in found.problems:
            self.renderer(Event("failed", argument, {"error": message, "size": 0}))
        if not found.files:
            return self.fatal("no files to upload" + (" (see the errors above)" if found.problems else ""))

        with new_session(o.transfer.token) as session:
            try:
                server = probe(o.endpoint, session, o.transfer.timeouts)
            except EndpointError as exc:
                return self.fatal(str(exc))
        if server.endpoint != o.endpoint:
            self.renderer(Event("warning", data={"message": f"{o.endpoint} redirects to {server.endpoint}; "
                                                            "uploading there"}))
        checksum = server.checksum()
        self.renderer(Event("server", data={"endpoint": server.endpoint, "version": ",".join(server.versions),
                                            "max_size": server.max_size, "extensions": sorted(server.extensions),
                                            "checksum": checksum[0] if checksum else None}))
        if checksum is None:
            self.renderer(Event("warning", data={"message": "server has no checksum extension; "
                                                            "chunks are sent without Upload-Checksum"}))
        state = StateFile(o.state_file, server.endpoint)
        try:
            state.open()
        except StateError as exc:
            return self.fatal(str(exc))
        try:
            for warning in state.warnings:
                self.renderer(Event("warning", data={"message": warning}))
            results = self._upload_all(found.files, sizes, server, state)
        finally:
            state.close()

        summary = Summary(results, time.monotonic() - started, found.problems)
        interrupted = self.stop.is_set()
        self.renderer.close()
        if self.json:
            self.renderer(Event("summary", data=summary.to_json()))
        else:
            self._print(summary.render())
            if interrupted:
                self._print("interrupted: run the same command again to resume")
        if interrupted:
            return EXIT_INTERRUPTED
        media_ok = True
        if o.wait:
            media_ok = self._wait(results)
            if self.stop.is_set():
                return EXIT_INTERRUPTED
        return exit_status(summary, media_ok)

    # ------------------------------------------------------------------ uploads
    def _upload_all(self, files: list[Path], sizes: dict[Path, int], server: ServerInfo,
                    state: StateFile) -> list[FileResult]:
        results: dict[Path, FileResult] = {}
        todo: list[Path] = []
        for path in files:  # Tus-Max-Size, up front: fail these before any byte is sent
            if server.max_size is not None and sizes[path] > server.max_size:
                result = FileResult(str(path), FAILED, size=sizes[path],
                                    error=f"file is {human_bytes(sizes[path])} ({sizes[path]} bytes), over the "
                                          f"server's Tus-Max-Size of {human_bytes(server.max_size)} "
                                          f"({server.max_size} bytes)")
                self.renderer(Event("failed", str(path), {"error": result.error, "size": result.size}))
                results[path] = result
            else:
                todo.append(path)

        emit: Emit = self.renderer
        pool = cf.ThreadPoolExecutor(max_workers=max(1, self.options.jobs), thread_name_prefix="upload")
        try:
            futures = {pool.submit(self._transfer, path, server, state, emit): path for path in todo}
            pending = set(futures)
            while pending:
                try:
                    _, pending = cf.wait(pending, timeout=0.5)
                except KeyboardInterrupt:
                    self._interrupt()
                if self.stop.is_set():
                    for future in pending:
                        future.cancel()
            for future, path in futures.items():
                if future.cancelled():
                    results[path] = FileResult(str(path), NOT_STARTED, size=sizes[path],
                                               error="not started (interrupted)")
                else:
                    results[path] = future.result()
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        return [results[path] for path in files]

    def _transfer(self, path: Path, server: ServerInfo, state: StateFile, emit: Emit) -> FileResult:
        if self.stop.is_set():
            return FileResult(str(path), NOT_STARTED, error="not started (interrupted)")
        return Transfer(path, server=server, state=state, options=self.options.transfer,
                        emit=emit, stop=self.stop).run()

    # ------------------------------------------------------------------ --wait
    def _wait(self, results: list[FileResult]) -> bool:
        items = [(r.path, r.media) for r in results if r.status not in (FAILED, NOT_STARTED)]
        if not items:
            return True
        printer: Emit = self.renderer if self.json else self._line_printer()
        if not self.json:
            self._print(f"\nwaiting for {len(items)} media item(s) to be ready…")
        o = self.options
        with new_session(o.transfer.token) as session:
            watcher = MediaWatcher(session, o.transfer.timeouts, printer, self.stop,
                                   interval=o.wait_interval, timeout=o.wait_timeout)
            statuses = watcher.follow(items)
        if self.json:
            self.renderer(Event("media_summary", data=_media_counts(statuses)))
        else:
            self._print(_media_table(statuses))
        return all(s.ok for s in statuses)

    def _line_printer(self) -> Emit:
        last: dict[str, str] = {}

        def emit(event: Event) -> None:
            state = str(event.data.get("state"))
            if last.get(event.file or "") == state:
                return
            last[event.file or ""] = state
            line = describe_event(event)
            if line:
                self._print(line)
        return emit

    # ------------------------------------------------------------------ plumbing
    def _print(self, text: str) -> None:
        try:
            print(text, file=self.stdout, flush=True)
        except (BrokenPipeError, ValueError):
            pass

    def _interrupt(self) -> None:
        """First Ctrl-C: let the chunks in flight finish (bounded by the request timeout) and
        report. Second: leave at once; that is safe because the state file is always whole
        and the server keeps what it acknowledged."""
        if not self.stop.is_set():
            self.stop.set()
            print("tusflow upload: stopping after the current chunks (Ctrl-C again to quit now); "
                  "run the same command again to resume", file=self.stderr, flush=True)
            return
        print("tusflow upload: quitting now; run the same command again to resume", file=self.stderr, flush=True)
        for stream in (self.stdout, self.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(EXIT_INTERRUPTED)

    @contextlib.contextmanager
    def _signals(self) -> Iterator[None]:
        """SIGTERM stops like Ctrl-C: finish the chunk in flight, keep the state, report."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def on_term(signum: int, frame: FrameType | None) -> None:
            self._interrupt()
        previous = signal.signal(signal.SIGTERM, on_term)
        try:
            yield
        finally:
            signal.signal(signal.SIGTERM, previous)


def _media_counts(statuses: list[MediaStatus]) -> dict[str, object]:
    counts: dict[str, int] = {}
    for s in statuses:
        counts[s.state] = counts.get(s.state, 0) + 1
    return {"states": counts, "ok": all(s.ok for s in statuses),
            "items": [{"file": s.file, "url": s.url, "state": s.state, "error": s.error} for s in statuses]}


def _media_table(statuses: list[MediaStatus]) -> str:
    counts = _media_counts(statuses)["states"]
    assert isinstance(counts, dict)
    lines = ["", "media " + ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))]
    for s in statuses:
        if not s.ok:
            lines.append(f"  {display_name(s.file)}: {s.state}" + (f" ({s.error})" if s.error else ""))
    return "\n".join(lines)


def _size(path: Path) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


def _isatty(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False

