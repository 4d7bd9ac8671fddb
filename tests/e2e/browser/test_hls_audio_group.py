"""The shared audio rendition plays in Chromium through hls.js, with every video rung: the
transcoder's real output (capped CRF, EXT-X-MEDIA TYPE=AUDIO group, loudness chain) served
from a plain loopback HTTP server, each level forced in turn."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from models.config import Rung, TranscodeConfig
from transcoder.pipeline import transcode
from tests.support.browser import hls_page, wait_js
from tests.support.media import make_clip

PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>audio group</title>
<script src="hls.min.js"></script></head><body><video muted playsinline></video><script>
const video = document.querySelector('video');
const hls = new Hls({ enableWorker: false });
window.report = { levels: 0, audioTracks: 0, buffered: {}, errors: [] };
hls.on(Hls.Events.MANIFEST_PARSED, (e, d) => {
  report.levels = d.levels.length; video.play();
});
hls.on(Hls.Events.AUDIO_TRACKS_UPDATED, (e, d) => { report.audioTracks = d.audioTracks.length; });
hls.on(Hls.Events.FRAG_BUFFERED, (e, d) => {
  const key = d.frag.type + ':' + d.frag.level;
  report.buffered[key] = (report.buffered[key] || 0) + 1;
});
hls.on(Hls.Events.ERROR, (e, d) => report.errors.push(d.details + (d.fatal ? ' fatal' : '')));
hls.loadSource('master.m3u8');
hls.attachMedia(video);
window.hls = hls;
</script></body></html>"""


@pytest.fixture(scope="module")
def ladder(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("src") / "lecture.mp4"
    make_clip(src, 640, 360, 8.0)
    out = tmp_path_factory.mktemp("hls")
    cfg = TranscodeConfig(ladder=(Rung("360p", 360, 600, 96), Rung("240p", 240, 300, 64)),
                          segment_duration=2, keyframe_interval=1, rung_min_saving=0.0)
    transcode(src, out, cfg, timeout=180)
    assert '#EXT-X-MEDIA:TYPE=AUDIO' in (out / "master.m3u8").read_text(encoding="utf-8")
    return out


def test_audio_group_plays_with_every_rung(chromium, ladder):
    with hls_page(chromium, ladder, PAGE) as page:
        levels = wait_js(page, "window.report && report.levels", 15, "manifest parsed")
        assert levels == 2
        assert wait_js(page, "report.audioTracks", 15, "audio tracks") == 1
        for level in range(levels):
            page.evaluate(f"hls.currentLevel = {level}")
            wait_js(page, f"report.buffered['main:{level}'] >= 1", 15, f"level {level}")
            start = page.evaluate("document.querySelector('video').currentTime")
            wait_js(page, f"document.querySelector('video').currentTime > {start} + 0.5",
                    15, f"playing on level {level}")
        report = page.evaluate("report")
        assert report["buffered"].get("audio:0", 0) >= 1, json.dumps(report)
        assert page.evaluate("document.querySelector('video').webkitAudioDecodedByteCount") > 0
        assert not [e for e in report["errors"] if "fatal" in e], report["errors"]
