"""The Media lifecycle on a real database (SQLite here, PostgreSQL on the second pass): every
move a job, the reconciler and the API make, the moves it refuses, and the rule that a job
superseded by a newer generation (or whose media was cancelled or deleted) changes nothing."""

from __future__ import annotations

import json
from typing import Iterator

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from models import lifecycle
from models.config import Settings
from models.db import init_db, make_engine
from models.lifecycle import MOVES, MediaState, Move, allowed, default_job_id, next_job_id
from models.tables import Media, Upload
from models.webhooks import WebhookDelivery

MEDIA = "0123456789abcdef0123456789abcdef"
JOB = default_job_id(MEDIA)
READY_FIELDS = dict(duration=12.5, width=640, height=360, renditions_json='[{"name": "360p"}]',
                    has_poster=True, has_storyboard=False)


@pytest.fixture
def hooked(settings: Settings) -> Settings:
    """Settings with a webhook receiver, so the moves that announce record outbox rows."""
    return settings.replace(webhooks={"urls": ("http://127.0.0.1:9/hook",)})


@pytest.fixture
def engine(settings: Settings) -> Iterator[Engine]:
    engine = make_engine(settings)
    init_db(engine)
    with Session(engine) as session:
        session.add(Upload(id=MEDIA, length=3, offset=3))
        session.add(Media(id=MEDIA, title="lecture"))
        session.commit()
    yield engine
    engine.dispose()


def row(engine: Engine) -> Media | None:
    return lifecycle.get(engine, MEDIA)


def hooks(engine: Engine) -> list[tuple[str, dict]]:
    with Session(engine) as session:
        rows = session.exec(select(WebhookDelivery).order_by(WebhookDelivery.created_at)).all()
    return [(r.event, json.loads(r.payload)["data"]) for r in rows]


def claimed(engine: Engine, job_id: str = JOB) -> Media:
    media = lifecycle.claim(engine, MEDIA, job_id)
    assert media is not None and media.state == MediaState.PROCESSING
    return media


# ---------------------------------------------------------------------------------- the table
def test_states_are_the_strings_stored_and_answered() -> None:
    assert [s.value for s in MediaState] == ["queued", "processing", "playable", "ready",
                                             "failed"]
    assert Media(id=MEDIA).state == MediaState.QUEUED == "queued"
    assert json.dumps({"state": MediaState.READY}) == '{"state": "ready"}'
    assert f"{MediaState.FAILED}" == "failed"


def test_the_move_table_refuses_impossible_moves() -> None:
    assert set(MOVES) == set(Move)
    assert allowed(Move.CLAIM, "queued") and allowed(Move.CLAIM, MediaState.PROCESSING)
    assert not allowed(Move.CLAIM, "ready") and not allowed(Move.CLAIM, "failed")
    assert not allowed(Move.READY, "queued") and not allowed(Move.PROGRESS, "queued")
    assert not allowed(Move.FAIL, "ready") and not allowed(Move.CANCEL, "failed")
    assert not allowed(Move.REQUEUE, "queued")
    assert all(allowed(Move.RETRY, state) for state in MediaState)


# ---------------------------------------------------------------------------------- a job's life
def test_a_job_claims_reports_and_finishes(engine: Engine, hooked: Settings) -> None:
    media = claimed(engine)
    assert (media.attempts, media.job_id, media.started_at is not None) == (1, JOB, True)
    assert lifecycle.is_current(engine, MEDIA, JOB)
    assert lifecycle.progress(engine, MEDIA, JOB, 142.0, -3.0)  # clamped
    assert (row(engine).progress, row(engine).eta_seconds) == (100.0, 0.0)

    done = lifecycle.mark_ready(engine, hooked, MEDIA, JOB, **READY_FIELDS)
    assert done and len(done.hooks) == 1
    media = row(engine)
    assert (media.state, media.width, media.renditions, media.has_poster) == \
        ("ready", 640, [{"name": "360p"}], True)
    assert media.finished_at is not None
    [(event, data)] = hooks(engine)
    assert (event, data["state"], data["media_id"]) == ("media.ready", "ready", MEDIA)
    # A finished media is not claimed, failed or cancelled by a late duplicate of its job.
    assert lifecycle.claim(engine, MEDIA, JOB) is None
    assert not lifecycle.fail(engine, hooked, MEDIA, JOB, "late")
    assert lifecycle.cancel(engine, MEDIA).state == "ready"
    assert row(engine).error is None and len(hooks(engine)) == 1


def test_moves_of_a_job_need_it_to_be_claimed(engine: Engine, hooked: Settings) -> None:
    assert not lifecycle.progress(engine, MEDIA, JOB, 10.0, None)
    assert not lifecycle.mark_ready(engine, hooked, MEDIA, JOB, **READY_FIELDS)
    assert not lifecycle.requeue_for_shutdown(engine, MEDIA, JOB)
    assert not lifecycle.retry_later(engine, MEDIA, JOB, "x")
    media = row(engine)
    assert (media.state, media.attempts, media.progress) == ("queued", 0, 0.0) and not hooks(engine)


def test_a_superseded_job_changes_nothing(engine: Engine, hooked: Settings) -> None:
    claimed(engine)
    assert lifecycle.progress(engine, MEDIA, JOB, 40.0, 5.0)
    generation = lifecycle.retry(engine, MEDIA)
    assert generation == lifecycle.Generation(JOB, next_job_id(JOB, MEDIA))
    fresh = row(engine)
    assert (fresh.state, fresh.job_id, fresh.attempts, fresh.progress, fresh.started_at) == \
        ("queued", generation.current, 0, 0.0, None)

    # The old job, still running somewhere: every move is a no-op and it learns to stop.
    assert not lifecycle.is_current(engine, MEDIA, JOB)
    assert not lifecycle.progress(engine, MEDIA, JOB, 80.0, 1.0)
    assert not lifecycle.mark_ready(engine, hooked, MEDIA, JOB, **READY_FIELDS)
    assert not lifecycle.fail(engine, hooked, MEDIA, JOB, "old job failed")
    assert not lifecycle.retry_later(engine, MEDIA, JOB, "old job failed")
    assert not lifecycle.requeue_for_shutdown(engine, MEDIA, JOB)
    assert lifecycle.claim(engine, MEDIA, JOB) is None
    assert not lifecycle.mark_enqueued(engine, MEDIA, JOB)
    after = row(engine)
    assert (after.state, after.job_id, after.progress, after.error, after.enqueued_at) == \
        ("queued", generation.current, 0.0, None, None)
    assert not hooks(engine)
    assert claimed(engine, generation.current).attempts == 1  # the new job is welcome

    # Now the media is processing again, under the new job: still nothing for the old one.
    assert not lifecycle.progress(engine, MEDIA, JOB, 90.0, 1.0)
    assert not lifecycle.mark_ready(engine, hooked, MEDIA, JOB, **READY_FIELDS)
    assert not lifecycle.fail(engine, hooked, MEDIA, JOB, "old job failed")
    assert not lifecycle.retry_later(engine, MEDIA, JOB, "old job failed")
    assert not lifecycle.requeue_for_shutdown(engine, MEDIA, JOB)
    assert not lifecycle.requeue_abandoned(engine, MEDIA, JOB, row(engine).started_at)
    assert lifecycle.new_generation(engine, MEDIA, JOB, row(engine).enqueued_at) is None
    assert lifecycle.claim(engine, MEDIA, JOB) is None
    media = row(engine)
    assert (media.state, media.job_id, media.attempts, media.progress, media.error) == \
        ("processing", generation.current, 1, 0.0, None)
    assert not hooks(engine)


def test_a_try_that_fails_goes_back_to_the_queue_then_gives_up(engine: Engine,
                                                                hooked: Settings) -> None:
    claimed(engine)
    assert lifecycle.retry_later(engine, MEDIA, JOB, "converter crashed")
    assert (row(engine).state, row(engine).error) == ("queued", "converter crashed")
    assert claimed(engine).attempts == 2 and row(engine).error is None
    done = lifecycle.fail(engine, hooked, MEDIA, JOB, "converter crashed again")
    assert done and len(done.hooks) == 1
    media = row(engine)
    assert (media.state, media.error, media.finished_at is not None) == \
        ("failed", "converter crashed again", True)
    [(event, data)] = hooks(engine)
    assert (event, data["state"], data["error"]) == ("media.failed", "failed",
                                                     "converter crashed again")
    # Failed is final for the job: a straggler try of it cannot claim the media again.
    assert lifecycle.claim(engine, MEDIA, JOB) is None


def test_the_reconciler_keeps_the_reason_the_job_wrote(engine: Engine, hooked: Settings) -> None:
    claimed(engine)
    lifecycle.retry_later(engine, MEDIA, JOB, "The file is damaged.")
    assert lifecycle.fail(engine, hooked, MEDIA, JOB, "The conversion failed.",
                          keep_earlier_reason=True)
    assert (row(engine).state, row(engine).error) == ("failed", "The file is damaged.")


def test_shutdown_gives_the_try_back(engine: Engine) -> None:
    claimed(engine)
    assert lifecycle.requeue_for_shutdown(engine, MEDIA, JOB)
    media = row(engine)
    assert (media.state, media.attempts, media.started_at) == ("queued", 0, None)


# ---------------------------------------------------------------------------------- the reconciler
def test_requeue_of_an_abandoned_job_needs_the_claim_it_saw(engine: Engine) -> None:
    seen = claimed(engine).started_at
    claimed(engine)  # another worker took the job again meanwhile: a newer claim
    newer = row(engine).started_at
    assert newer != seen
    assert not lifecycle.requeue_abandoned(engine, MEDIA, JOB, seen)
    assert row(engine).state == "processing"
    assert lifecycle.requeue_abandoned(engine, MEDIA, JOB, newer)
    assert (row(engine).state, row(engine).attempts) == ("queued", 2)


def test_a_lost_job_becomes_the_next_generation_once(engine: Engine) -> None:
    assert lifecycle.mark_enqueued(engine, MEDIA, JOB)
    stamp = row(engine).enqueued_at
    assert stamp is not None and row(engine).job_id == JOB
    assert lifecycle.mark_enqueued(engine, MEDIA, JOB) and row(engine).enqueued_at == stamp
    assert lifecycle.new_generation(engine, MEDIA, JOB, None) is None  # not the stamp we saw
    new_id = lifecycle.new_generation(engine, MEDIA, JOB, stamp)
    assert new_id == f"{JOB}-2"
    media = row(engine)
    assert (media.state, media.job_id, media.enqueued_at) == ("queued", new_id, None)
    # A second reconciler that read the same row loses the race and changes nothing.
    assert lifecycle.new_generation(engine, MEDIA, JOB, stamp) is None
    assert row(engine).job_id == new_id
    assert lifecycle.claim(engine, MEDIA, JOB) is None


# ---------------------------------------------------------------------------------- API and CLI
def test_cancel_stops_the_running_job(engine: Engine, hooked: Settings) -> None:
    claimed(engine)
    media = lifecycle.cancel(engine, MEDIA)
    assert (media.state, media.error, media.job_id) == ("failed", lifecycle.CANCELLED, JOB)
    assert not lifecycle.is_current(engine, MEDIA, JOB)
    assert not lifecycle.progress(engine, MEDIA, JOB, 50.0, None)
    assert not lifecycle.mark_ready(engine, hooked, MEDIA, JOB, **READY_FIELDS)
    assert row(engine).state == "failed" and not hooks(engine)
    assert lifecycle.retry(engine, MEDIA).current == f"{JOB}-2"  # retry starts it over
    assert row(engine).state == "queued" and row(engine).error is None


def test_delete_removes_media_and_upload_and_announces_it(engine: Engine,
                                                          hooked: Settings) -> None:
    seen = claimed(engine)
    lifecycle.cancel(engine, MEDIA)
    gone = lifecycle.delete(engine, hooked, MEDIA, seen=seen)
    assert gone and len(gone.hooks) == 1
    with Session(engine) as session:
        assert session.get(Media, MEDIA) is None and session.get(Upload, MEDIA) is None
    [(event, data)] = hooks(engine)
    assert (event, data["state"], data["title"]) == ("media.deleted", "processing", "lecture")
    assert not lifecycle.delete(engine, hooked, MEDIA)
    assert lifecycle.retry(engine, MEDIA) is None
    assert lifecycle.cancel(engine, MEDIA) is None
    assert not lifecycle.progress(engine, MEDIA, JOB, 1.0, None)
    assert len(hooks(engine)) == 1
