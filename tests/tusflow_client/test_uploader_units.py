"""The uploader's parts on their own: discovery rules, the state file, backoff, rendering,
following media states. No tusflow server needed (the media test runs a tiny fake API)."""

from __future__ import annotations

import io
import json
import random
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Iterator

import pytest
import requests

from tests.support.httpd import local_http
from tusflow_client.discovery import DEFAULT_EXTENSIONS, discover, parse_extensions
from tusflow_client.events import Event
from tusflow_client.media import MediaWatcher
from tusflow_client.net import Timeouts, describe
from tusflow_client.progress import PlainRenderer, TtyRenderer
from tusflow_client.retry import RetryPolicy
from tusflow_client.state import StateError, StateFile, default_state_path, state_key
from tusflow_client.summary import Summary, exit_status
from tusflow_client.transfer import FileResult, filetype_for, title_for


def _touch(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


# ---------------------------------------------------------------------------- discovery
def test_discovery_walks_directories_globs_and_filters_extensions(tmp_path: Path) -> None:
    a = _touch(tmp_path / "sem" / "week1" / "a.MP4")
    b = _touch(tmp_path / "sem" / "week2" / "b.mkv")
    _touch(tmp_path / "sem" / "week2" / "b.srt")
    _touch(tmp_path / "sem" / "._a.mp4")                 # macOS resource fork
    _touch(tmp_path / "sem" / ".cache" / "c.mp4")         # hidden directory
    notes = _touch(tmp_path / "notes.txt")
    g = _touch(tmp_path / "other" / "g.webm")
    _touch(tmp_path / "other" / "g.jpg")

    found = discover([str(tmp_path / "sem"), str(notes), str(tmp_path / "other" / "*"),
                      str(tmp_path / "sem" / "week1" / "a.MP4")], parse_extensions(None))
    assert found.files == [a.resolve(), b.resolve(), notes.resolve(), g.resolve()]
    assert found.problems == []

    only_mkv = discover([str(tmp_path / "sem")], parse_extensions(" .MKV , "))
    assert only_mkv.files == [b.resolve()]
    recursive = discover([str(tmp_path / "**" / "*.webm")], parse_extensions(None))
    assert recursive.files == [g.resolve()]


def test_extension_defaults_are_the_usual_video_containers() -> None:
    assert set(DEFAULT_EXTENSIONS) >= {"mp4", "mov", "mkv", "webm", "avi", "m4v", "mpg", "mpeg", "ts",
                                       "flv", "wmv", "3gp", "ogv"}
    assert parse_extensions("") == frozenset(DEFAULT_EXTENSIONS)


def test_discovery_reports_what_matched_nothing(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    found = discover([str(tmp_path / "nope.mp4"), str(tmp_path / "empty"), str(tmp_path / "*.mov")],
                     parse_extensions("mp4,mov"))
    assert found.files == []
    assert [p[1] for p in found.problems] == ["no such file or directory",
                                             "no files with extension mov,mp4 in directory",
                                             "pattern matched no files"]


# ---------------------------------------------------------------------------- state file
def test_state_file_survives_reopen_and_drops_stale_keys(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "state.json"
    clip = Path("/videos/a.mp4")
    old, new = state_key(clip, 10, 1), state_key(clip, 12, 2)
    with StateFile(path, "http://h/files/") as state:
        assert state.get_item(old) is None
        state.set_item(old, None)                       # tuspy does this when nothing is stored
        assert not path.exists()
        state.set_item(old, "http://h/files/1")
        state.set_item(state_key(Path("/videos/b|c.mp4"), 5, 5), "http://h/files/2")
    with StateFile(path, "http://h/files/") as state:
        assert state.get_item(old) == "http://h/files/1"
        state.set_item(new, "http://h/files/3")         # a.mp4 changed: its old entry goes
        assert state.get_item(old) is None
        state.mark_done(new, "http://h/api/media/3")
        assert state.is_done(new) and state.media_of(new) == "http://h/api/media/3"
        state.remove_item(new)
        assert state.get_item(new) is None
    with StateFile(path, "http://other/files/") as other:
        assert other.get_item(state_key(Path("/videos/b|c.mp4"), 5, 5)) is None, "kept per endpoint"
    assert [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")] == []


def test_state_file_is_locked_against_a_second_run(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    with StateFile(path, "e"):
        with pytest.raises(StateError, match="in use by another"):
            StateFile(path, "e").open()
    with StateFile(path, "e"):
        pass  # released on close


def test_a_damaged_state_file_is_set_aside_not_fatal(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_text("{not json")
    with StateFile(path, "e") as state:
        assert state.get_item("k") is None
        assert "moved it to" in state.warnings[0]
        state.set_item("p|1|1", "u")
    assert json.loads(path.read_text())["endpoints"]["e"]["p|1|1"]["url"] == "u"
    assert len(list(tmp_path.glob("state.json.corrupt-*"))) == 1


def test_state_file_writes_are_safe_from_many_threads(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    with StateFile(path, "e") as state:
        def work(n: int) -> None:
            for i in range(20):
                state.set_item(f"/f{n}-{i}|1|1", f"u{n}-{i}")
        threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    assert len(json.loads(path.read_text())["endpoints"]["e"]) == 120


# ---------------------------------------------------------------------------- retry
def test_backoff_doubles_up_to_the_cap_with_jitter() -> None:
    policy = RetryPolicy(retries=5, base_delay=1.0, max_delay=8.0)
    rng = random.Random(1)
    for failures, ceiling in [(1, 1), (2, 2), (3, 4), (4, 8), (5, 8), (30, 8)]:
        delay = policy.delay(failures, rng)
        assert ceiling / 2 <= delay <= ceiling
    assert not policy.exhausted(5) and policy.exhausted(6)


# ---------------------------------------------------------------------------- metadata
def test_titles_and_types() -> None:
    assert title_for(Path("/x/week_03-intro.mp4"), None) == "week 03 intro"
    assert title_for(Path("/x/Bio 101/l1.mov"), "{parent} – {stem}") == "Bio 101 – l1"
    assert title_for(Path("/x/a.mp4"), "Literal {braces") == "Literal {braces"
    assert filetype_for(Path("a.MKV")) == "video/x-matroska"
    assert filetype_for(Path("a.ts")) == "video/mp2t"
    assert filetype_for(Path("a.unknownext")) == "application/octet-stream"


def test_network_errors_in_words() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(requests.RequestException) as info:
        requests.options(f"http://127.0.0.1:{port}/", timeout=5)
    assert describe(info.value) == "connection refused"


# ---------------------------------------------------------------------------- rendering
class _FakeTty(io.StringIO):
    encoding = "utf-8"

    def isatty(self) -> bool:
        return True


def test_terminal_renderer_draws_file_and_total_bars() -> None:
    out = _FakeTty()
    renderer = TtyRenderer(out, refresh=60, width=100)  # no background redraws: draw by hand
    renderer(Event("discovered", data={"files": 2, "bytes": 2000, "problems": []}))
    renderer(Event("start", "/v/a.mp4", {"size": 1000, "offset": 0}))
    renderer(Event("progress", "/v/a.mp4", {"offset": 500, "size": 1000}))
    time.sleep(0.1)
    renderer(Event("progress", "/v/a.mp4", {"offset": 600, "size": 1000}))
    with renderer.lock:
        renderer._draw(bars=True)
        lines = renderer.bar_lines(100)
    assert lines[0].startswith("a.mp4 ") and " 60.0%" in lines[0] and "/s" in lines[0]
    assert lines[1].startswith("total 0/2 ") and " 30.0%" in lines[1]
    assert all(len(line) < 100 for line in lines)
    renderer(Event("done", "/v/a.mp4", {"status": "uploaded", "size": 1000, "sent": 1000, "seconds": 1.0}))
    renderer.close()
    text = out.getvalue()
    assert "\x1b[2Kfound 2 file(s)" in text and "done     /v/a.mp4 uploaded" in text
    assert text.endswith("\x1b[?25h") and "\x1b[2F" in text


def test_plain_renderer_prints_lines_and_periodic_totals() -> None:
    out = io.StringIO()
    renderer = PlainRenderer(out, interval=0)
    renderer(Event("discovered", data={"files": 1, "bytes": 1000, "problems": []}))
    renderer(Event("start", "/v/a.mp4", {"size": 1000, "offset": 400, "resumed": True}))
    renderer(Event("retry", "/v/a.mp4", {"error": "connection reset by peer", "attempt": 1, "of": 8, "delay": 1.5}))
    renderer(Event("progress", "/v/a.mp4", {"offset": 1000, "size": 1000}))
    renderer(Event("done", "/v/a.mp4", {"status": "resumed", "size": 1000, "sent": 600, "seconds": 2.0}))
    lines = out.getvalue().splitlines()
    assert lines == [
        "found 1 file(s), 1000 B",
        "resume   /v/a.mp4 at 400 B of 1000 B",
        "retry    /v/a.mp4: connection reset by peer (attempt 1 of 8, waiting 1.5s)",
        lines[3],
        "done     /v/a.mp4 resumed, 1000 B in 2.0s (300 B/s)",
    ]
    assert lines[3].startswith("progress 0/1 files, 100% (1000 B of 1000 B)")


def test_summary_table_and_exit_status() -> None:
    results = [FileResult("/v/a.mp4", "uploaded", size=100, acked=100),
               FileResult("/v/b.mp4", "resumed", size=200, start_offset=150, acked=50),
               FileResult("/v/c.mp4", "skipped", size=300),
               FileResult("/v/d.mp4", "failed", size=400, error="file vanished")]
    summary = Summary(results, 2.0)
    text = summary.render()
    assert "  uploaded         1       100 B       100 B" in text
    assert "  resumed          1       200 B        50 B" in text
    assert "  skipped          1       300 B         0 B" in text
    assert "  failed           1       400 B         0 B" in text
    assert "  total            4      1000 B       150 B" in text
    assert "1 not uploaded:\n  /v/d.mp4: file vanished" in text
    assert summary.to_json()["bytes"] == 150
    assert exit_status(summary) == 1
    assert exit_status(Summary(results[:3], 1.0)) == 0
    assert exit_status(Summary(results[:3], 1.0), media_ok=False) == 1
    assert exit_status(Summary(results[:3], 1.0, [("x", "no such file")])) == 1


# ---------------------------------------------------------------------------- --wait
class _MediaApi(BaseHTTPRequestHandler):
    """/api/media/ok goes queued → processing → ready; /bad fails; /missing is 404."""
    polls: dict[str, int] = {}

    def do_GET(self) -> None:
        name = self.path.rsplit("/", 1)[-1]
        if name == "missing":
            self.send_response(404)
            self.end_headers()
            return
        n = self.polls.get(name, 0)
        self.polls[name] = n + 1
        if name == "ok":
            body = [{"state": "queued", "progress": 0}, {"state": "processing", "progress": 40.0},
                    {"state": "ready", "progress": 100.0}][min(n, 2)]
        else:
            body = {"state": "failed", "progress": 0, "error": "no video stream"}
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def media_api() -> Iterator[str]:
    handler = type("Api", (_MediaApi,), {"polls": {}})
    with local_http(handler) as origin:
        yield f"{origin}/api/media/"


def test_media_watcher_follows_states_until_final(media_api: str) -> None:
    events: list[Event] = []
    watcher = MediaWatcher(requests.Session(), Timeouts(2, 5), events.append, threading.Event(),
                           interval=0.05, timeout=20, missing_grace=0.3)
    statuses = watcher.follow([("ok.mp4", media_api + "ok"), ("bad.mp4", media_api + "bad"),
                               ("gone.mp4", media_api + "missing"), ("nolink.mp4", None)])
    assert [(s.file, s.state) for s in statuses] == [("ok.mp4", "ready"), ("bad.mp4", "failed"),
                                                     ("gone.mp4", "unavailable"), ("nolink.mp4", "unknown")]
    assert statuses[1].error == "no video stream"
    assert "has no media API" in (statuses[2].error or "")
    ok_states = [e.data["state"] for e in events if e.file == "ok.mp4"]
    assert ok_states == ["queued", "processing", "ready"]


def test_media_watcher_gives_up_at_the_timeout(media_api: str) -> None:
    events: list[Event] = []
    watcher = MediaWatcher(requests.Session(), Timeouts(2, 5), events.append, threading.Event(),
                           interval=0.05, timeout=0.2, missing_grace=60)
    [status] = watcher.follow([("gone.mp4", media_api + "missing")])
    assert status.state == "timeout" and not status.ok


def test_default_state_path_follows_xdg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    assert default_state_path() == tmp_path / "tusflow" / "upload-state.json"
