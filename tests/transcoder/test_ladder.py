"""Ladder planning on made-up probe results: sizes, frame rates, bitrates, names."""

from fractions import Fraction

import pytest

from models.config import DEFAULT_LADDER, Rung, TranscodeConfig
from transcoder.ladder import AUDIO_ONLY_NAME, output_fps, plan_ladder
from tests.support.probes import fake_probe



def sizes(plans):
    return [(p.name, p.width, p.height) for p in plans]


def test_1080p_source_gets_the_whole_default_ladder():
    plans = plan_ladder(fake_probe(1920, 1080), TranscodeConfig())
    assert sizes(plans) == [("1080p", 1920, 1080), ("720p", 1280, 720), ("480p", 854, 480),
                            ("360p", 640, 360), ("240p", 426, 240)]
    assert [p.video_kbps for p in plans] == [r.video_kbps for r in DEFAULT_LADDER]
    assert [p.audio_kbps for p in plans] == [r.audio_kbps for r in DEFAULT_LADDER]


def test_never_above_the_source():
    plans = plan_ladder(fake_probe(1280, 720), TranscodeConfig())
    assert [p.name for p in plans] == ["720p", "480p", "360p", "240p"]
    assert all(p.width <= 1280 and p.height <= 720 for p in plans)


def test_portrait_scales_by_the_short_side():
    plans = plan_ladder(fake_probe(1080, 1920), TranscodeConfig())
    assert sizes(plans)[:2] == [("1080p", 1080, 1920), ("720p", 720, 1280)]
    for p in plans:
        assert p.height > p.width
        assert abs(p.width / p.height - 1080 / 1920) < 0.01


@pytest.mark.parametrize("width, height", [(321, 241), (1279, 719), (853, 481), (1000, 1001),
                                           (323, 361)])
def test_dimensions_are_even_and_within_the_source(width, height):
    for plan in plan_ladder(fake_probe(width, height), TranscodeConfig()):
        assert plan.width % 2 == 0 and plan.height % 2 == 0
        assert plan.width <= width and plan.height <= height


def test_aspect_is_kept_for_unusual_shapes():
    plans = plan_ladder(fake_probe(1920, 800), TranscodeConfig())  # 2.4:1 cinema
    assert sizes(plans)[0] == ("720p", 1728, 720)
    assert all(abs(p.width / p.height - 2.4) < 0.02 for p in plans)


def test_source_smaller_than_every_rung_gets_one_rendition_at_its_own_size():
    cfg = TranscodeConfig(ladder=(Rung("480p", 480, 1200), Rung("360p", 360, 700)))
    [plan] = plan_ladder(fake_probe(321, 241), cfg)
    assert (plan.width, plan.height) == (320, 240)
    assert plan.name == "240p"
    assert 100 <= plan.video_kbps < 700  # scaled down from the smallest rung by pixel count


@pytest.mark.parametrize("source, short, expected", [
    (Fraction(30), 720, Fraction(30)), (Fraction(60), 720, Fraction(60)),
    (Fraction(60), 360, Fraction(30)), (Fraction(50), 360, Fraction(25)),
    (Fraction(50), 480, Fraction(50)), (Fraction(120), 1080, Fraction(60)),
    (Fraction(60000, 1001), 240, Fraction(30000, 1001)), (Fraction(2987, 100), 720,
                                                          Fraction(30000, 1001)),
    (Fraction(30), 432, Fraction(30)), (Fraction(48), 432, Fraction(24)),
    (Fraction(15), 240, Fraction(15)), (Fraction(144), 1080, Fraction(48)),
])
def test_frame_rate_is_capped_by_even_decimation(source, short, expected):
    assert output_fps(source, short) == expected


def test_rungs_get_frame_rates_by_their_size():
    plans = plan_ladder(fake_probe(1920, 1080, fps=Fraction(60)), TranscodeConfig())
    assert {p.name: p.fps for p in plans} == {"1080p": 60, "720p": 60, "480p": 60,
                                              "360p": 30, "240p": 30}


def test_capped_vbr_numbers():
    [plan] = plan_ladder(fake_probe(640, 360), TranscodeConfig(ladder=(Rung("360p", 360, 700),)))
    assert plan.maxrate_kbps == 1050 and plan.bufsize_kbps == 2100


def test_duplicate_heights_and_unsafe_names():
    cfg = TranscodeConfig(ladder=(Rung("a b/../x", 360, 700), Rung("360p", 360, 800),
                                  Rung("audio", 240, 400)))
    plans = plan_ladder(fake_probe(640, 360), cfg)
    assert [p.name for p in plans] == ["360p", "240p"]


def test_audio_only_source_gets_one_audio_rendition():
    [plan] = plan_ladder(fake_probe(None, None), TranscodeConfig())
    assert plan.name == AUDIO_ONLY_NAME and not plan.has_video
    assert plan.audio_kbps == max(r.audio_kbps for r in DEFAULT_LADDER)
