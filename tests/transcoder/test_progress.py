"""The -progress parser and the percent/ETA arithmetic, without ffmpeg."""

from transcoder.progress import ProgressParser, ProgressSnapshot, estimate

BLOCK = """frame=89
fps=0.00
stream_0_0_q=29.0
bitrate=N/A
total_size=N/A
out_time_us=2965333
out_time_ms=2965333
out_time=00:00:02.965333
dup_frames=0
drop_frames=0
speed= 6.4x
progress=continue
"""


def feed_all(text: str) -> list[ProgressSnapshot]:
    parser = ProgressParser()
    return [s for s in (parser.feed(line) for line in text.splitlines(keepends=True)) if s]


def test_one_block_gives_one_snapshot_with_time_and_speed():
    [snap] = feed_all(BLOCK)
    assert snap.out_time == 2.965333
    assert snap.speed == 6.4
    assert not snap.finished


def test_blocks_are_independent_and_end_is_recognised():
    second = BLOCK.replace("out_time_us=2965333", "out_time_us=4000000").replace(
        "speed= 6.4x", "speed=N/A").replace("progress=continue", "progress=end")
    first, last = feed_all(BLOCK + second)
    assert first.out_time == 2.965333 and last.out_time == 4.0
    assert last.speed is None
    assert last.finished


def test_out_time_fallbacks_and_not_available():
    only_ms = "out_time_ms=1500000\nprogress=continue\n"
    only_clock = "out_time=00:01:02.500000\nprogress=continue\n"
    missing = "out_time_us=N/A\nout_time=N/A\nprogress=continue\n"
    assert feed_all(only_ms)[0].out_time == 1.5
    assert feed_all(only_clock)[0].out_time == 62.5
    assert feed_all(missing)[0].out_time is None


def test_negative_start_times_are_clamped():
    assert feed_all("out_time_us=-23000\nprogress=continue\n")[0].out_time == 0.0


def test_garbage_lines_are_ignored():
    assert feed_all("hello\n\n=\nprogress=continue\n")[0].out_time is None


def test_estimate_percent_and_eta_from_speed():
    percent, eta = estimate(ProgressSnapshot(out_time=25.0, speed=2.5, finished=False), 100.0)
    assert percent == 25.0
    assert eta == 30.0  # 75 s of media left at 2.5x


def test_estimate_uses_elapsed_wall_time_without_speed():
    percent, eta = estimate(ProgressSnapshot(10.0, None, False), 40.0, elapsed=5.0)
    assert percent == 25.0 and eta == 15.0  # 2x so far, 30 s of media left


def test_estimate_is_clamped_and_finishes_at_100():
    assert estimate(ProgressSnapshot(120.0, 1.0, False), 100.0) == (100.0, 0.0)
    assert estimate(ProgressSnapshot(None, None, False), 100.0) == (0.0, None)
    assert estimate(ProgressSnapshot(1.0, None, True), 100.0) == (100.0, 0.0)
    assert estimate(ProgressSnapshot(5.0, None, False), 100.0)[1] is None
