"""The small decisions, without processes: job ids and generations, the retry schedule RQ will
actually follow, atomic publishing, the log line format, where Redis is."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest
from redis import Redis
from rq.job import Job

from models.config import Settings
from transcoder.jobs import publish_dir
from models.logs import LogfmtFormatter, fields, media_from_job_id
from models.lifecycle import default_job_id, job_belongs_to, next_job_id
from transcoder.queue import retry_policy
from models.redis_conn import redis_url

MEDIA = "0123456789abcdef0123456789abcdef"


def test_job_ids_and_generations() -> None:
    first = default_job_id(MEDIA)
    assert first == f"transcode-{MEDIA}"
    assert next_job_id(None, MEDIA) == f"{first}-2"
    assert next_job_id(first, MEDIA) == f"{first}-2"
    assert next_job_id(f"{first}-2", MEDIA) == f"{first}-3"
    assert next_job_id(f"{first}-41", MEDIA) == f"{first}-42"
    assert job_belongs_to(first, MEDIA) and job_belongs_to(f"{first}-7", MEDIA)
    assert not job_belongs_to(f"transcode-{MEDIA[:-1]}e", MEDIA)
    assert not job_belongs_to(f"{first}-x", MEDIA)
    assert media_from_job_id(f"{first}-3") == MEDIA


@pytest.mark.parametrize("tries,backoff,used,expected", [
    (3, (10, 60, 300), 0, [10, 60]),
    (3, (10,), 0, [10, 10]),
    (4, (5, 50), 0, [5, 50, 50]),
    (3, (10, 60, 300), 1, [10]),
    (1, (10,), 0, None),
    (3, (10, 60), 5, None),
])
def test_retry_policy_is_the_schedule_rq_follows(tries: int, backoff: tuple, used: int,
                                                 expected: list[int] | None) -> None:
    settings = Settings().replace(worker={"tries": tries, "retry_backoff": backoff})
    retry = retry_policy(settings, used)
    if expected is None:
        assert retry is None
        return
    assert retry is not None and retry.max == len(expected)
    job = Job(connection=Redis())  # never connects: only the retry arithmetic is used
    job.retries_left, job.retry_intervals = retry.max, retry.intervals
    waits = []
    while job.retries_left:
        waits.append(job.get_retry_interval())  # what RQ's Job.retry() will wait
        job.retries_left -= 1
    assert waits == expected


def test_publish_is_one_rename_and_replaces_an_older_ladder(tmp_path: Path) -> None:
    media, scratch = tmp_path / "media", tmp_path / "scratch"
    scratch.mkdir()
    first = scratch / "a.1"
    (first / "240p").mkdir(parents=True)
    (first / "master.m3u8").write_text("#EXTM3U\n# one\n")
    target = media / "a"
    publish_dir(first, target, scratch)
    assert not first.exists() and (target / "master.m3u8").read_text().endswith("one\n")

    second = scratch / "a.2"
    (second / "360p").mkdir(parents=True)
    (second / "master.m3u8").write_text("#EXTM3U\n# two\n")
    inode_before = target.stat().st_ino
    publish_dir(second, target, scratch)
    assert (target / "master.m3u8").read_text().endswith("two\n")
    assert (target / "360p").is_dir() and not (target / "240p").exists()
    assert target.stat().st_ino != inode_before
    assert list(scratch.iterdir()) == []  # the older ladder is gone, nothing half-left


def test_log_lines_are_one_line_logfmt_with_the_media() -> None:
    formatter = LogfmtFormatter()
    record = logging.LogRecord("rq.worker", logging.INFO, __file__, 1,
                               "Worker w1: Job OK (%s)", (default_job_id(MEDIA) + "-2",), None)
    line = formatter.format(record)
    assert f" media={MEDIA} " in line and line.startswith("ts=") and "\n" not in line
    try:
        raise ValueError("bad\nthing")
    except ValueError:
        exc_info = sys.exc_info()
    record = logging.LogRecord("tusflow.jobs", logging.ERROR, __file__, 1,
                               "event=transcode.failed media=%s reason=%s", (MEDIA, '"x"'), exc_info)
    line = formatter.format(record)
    assert "\n" not in line and 'exc="ValueError: bad\\nthing"' in line
    assert line.count(f"media={MEDIA}") == 1
    assert fields(reason='It said "no"', n=3, none=None) == 'reason="It said \\"no\\"" n=3 none=-'


def test_redis_defaults_to_the_private_socket_in_data_dir(tmp_path: Path) -> None:
    settings = Settings().replace(storage={"data_dir": tmp_path})
    assert redis_url(settings) == f"unix://{tmp_path}/redis.sock"
    assert redis_url(settings.replace(redis={"url": "redis://h:6379/2"})) == "redis://h:6379/2"
