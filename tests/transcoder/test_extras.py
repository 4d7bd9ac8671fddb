"""Poster and storyboard planning, and the WebVTT it writes."""

import re

import pytest

from models.config import TranscodeConfig
from transcoder.extras import plan_poster, plan_storyboard, storyboard_interval
from transcoder.ladder import plan_ladder
from tests.support.filtergraph import Chain, last, names
from tests.support.probes import fake_probe



@pytest.mark.parametrize("duration, expected", [(3, 1), (100, 1), (101, 2), (450, 5),
                                                (3600, 45), (6 * 3600, 240), (30_000, 300),
                                                (40_000, 420)])
def test_automatic_interval_gives_about_100_round_tiles(duration, expected):
    assert storyboard_interval(duration, TranscodeConfig()) == expected
    assert duration / expected <= 101


def test_configured_interval_is_kept_unless_it_makes_a_huge_sprite():
    assert storyboard_interval(100, TranscodeConfig(storyboard_interval=2.5)) == 2.5
    assert storyboard_interval(6000, TranscodeConfig(storyboard_interval=1)) == 10


def test_storyboard_grid_and_vtt_cover_the_whole_duration():
    plan = plan_storyboard(fake_probe(1280, 720, duration=95.5), TranscodeConfig(storyboard_columns=10))
    assert (plan.interval, plan.count, plan.columns, plan.rows) == (1, 96, 10, 10)
    assert (plan.tile_width, plan.tile_height) == (160, 90)
    chain = Chain.parse(plan.filter()).filters
    assert last(chain, "fps").rate() == 1  # one frame per interval...
    assert last(chain, "trim").options["end_frame"] == "96"  # ...counted after fps, one sheet
    assert names(chain).index("fps") < names(chain).index("trim") < names(chain).index("tile")
    assert last(chain, "scale").size() == (160, 90)
    assert last(chain, "setsar").options["r"] == "1"
    assert names(chain)[-1] == "tile" and last(chain, "tile").options["layout"] == "10x10"
    cues = re.findall(r"(\S+) --> (\S+)\n(\S+)", plan.vtt(95.5))
    assert len(cues) == 96
    assert cues[0] == ("00:00:00.000", "00:00:01.000", "storyboard.jpg#xywh=0,0,160,90")
    assert cues[11] == ("00:00:11.000", "00:00:12.000", "storyboard.jpg#xywh=160,90,160,90")
    assert cues[-1] == ("00:01:35.000", "00:01:35.500", "storyboard.jpg#xywh=800,810,160,90")
    assert plan.vtt(95.5).startswith("WEBVTT\n\n")


def test_short_videos_get_a_single_row_and_portrait_tiles_keep_their_shape():
    plan = plan_storyboard(fake_probe(1080, 1920, duration=3.0), TranscodeConfig())
    assert (plan.count, plan.columns, plan.rows) == (3, 3, 1)
    assert (plan.tile_width, plan.tile_height) == (160, 284)


def test_poster_searches_10_to_30_percent_in_at_the_top_rendition_size():
    probe = fake_probe(1920, 1080, duration=20.0)
    plan = plan_poster(probe, plan_ladder(probe, TranscodeConfig()))
    assert (plan.start, plan.end) == (2.0, 6.0)
    assert (plan.width, plan.height) == (1280, 720)
    assert plan.every_nth_frame == 15
    assert plan.batch >= 1 + 4 * 2  # every candidate fits in one thumbnail batch
    chain = Chain.parse(plan.filter()).filters
    assert names(chain)[0] == "select" and names(chain)[-1] == "thumbnail"
    expr = last(chain, "select").options["expr"]
    # The first frame, plus every 15th frame between 2 s and 6 s.
    assert "eq(n,0)+" in expr and "between(t,2.000,6.000)" in expr and "mod(n,15)" in expr
    assert last(chain, "scale").size() == (1280, 720)
    assert last(chain, "thumbnail").options["n"] == str(plan.batch)


def test_poster_window_is_capped_for_long_videos():
    probe = fake_probe(1280, 720, duration=3600.0)
    plan = plan_poster(probe, plan_ladder(probe, TranscodeConfig()))
    assert plan.end - plan.start == 10.0
