"""A chunked ladder (three chunk jobs joined, one audio part) plays in Chromium through hls.js
across every chunk join: ``currentTime`` passes each join on every rung, the buffer stays one
range, no error. The ladder is made by real ``tusflow serve`` + ``tusflow worker`` processes
and served from a plain loopback HTTP server."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Callable

from models.layout import Layout
from models.lifecycle import MediaState
from tests.support.browser import hls_page, wait_js
from tests.support.media import make_clip
from tests.support.stack import SLOW_LADDER, upload

PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>joins</title>
<script src="hls.min.js"></script></head><body><video muted playsinline></video><script>
const video = document.querySelector('video');
const hls = new Hls({ enableWorker: false, startLevel: 0 });
window.report = { levels: 0, errors: [] };
hls.on(Hls.Events.MANIFEST_PARSED, (e, d) => { report.levels = d.levels.length; });
hls.on(Hls.Events.ERROR, (e, d) => report.errors.push(d.details + (d.fatal ? ' fatal' : '')));
hls.loadSource('master.m3u8');
hls.attachMedia(video);
window.hls = hls;
</script></body></html>"""
JOINS = (4.0, 8.0)  # chunk_seconds = 4 on a 10 s clip


def test_playback_passes_every_chunk_join_on_every_rung(
        stack: Callable, chromium: Any, tmp_path: Path) -> None:
    s = stack(transcode={"ladder": SLOW_LADDER, "chunk_seconds": 4.0, "segment_duration": 2,
                         "keyframe_interval": 1, "first_rung": "240p", "rung_min_saving": 0.0})
    s.start_worker("a")
    s.start_worker("b")
    clip = make_clip(tmp_path / "ten.mp4", 640, 360, seconds=10)
    media_id = upload(s.server.url, clip)
    done = s.wait_state(media_id, (MediaState.READY, MediaState.FAILED), timeout=180)
    assert done.state == MediaState.READY, done.error
    assert any("part=chunk-2" in line for w in s.workers for line in w.output.splitlines())
    site = tmp_path / "site"
    shutil.copytree(Layout(s.settings.data_dir).media_dir(media_id), site)
    with hls_page(chromium, site, PAGE) as page:
        levels = wait_js(page, "window.report && report.levels", 15, "manifest parsed")
        assert levels >= 2
        for level in range(levels):
            page.evaluate(f"hls.currentLevel = {level}")
            for join in JOINS:
                page.evaluate(f"document.querySelector('video').currentTime = {join - 0.6}")
                page.evaluate("document.querySelector('video').play()")
                wait_js(page, f"document.querySelector('video').currentTime > {join + 0.4}",
                        20, f"level {level} past the join at {join} s")
                assert page.evaluate("hls.currentLevel") in (level, -1)
        wait_js(page, "document.querySelector('video').buffered.length >= 1", 5, "buffered")
        report = page.evaluate("report")
        assert not [e for e in report["errors"] if "fatal" in e], json.dumps(report)
        # Forced level switches and seeks abort loads and re-append fragments that are
        # buffered already (bufferAppendNoProgress: "appended without buffered range
        # growth"); a gap at a join would stall currentTime above, not show up here.
        benign = ("aborted", "bufferStalledError", "bufferNudgeOnStall",
                  "bufferAppendNoProgress")
        assert not [e for e in report["errors"] if e not in benign], json.dumps(report)
