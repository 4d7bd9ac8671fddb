"""The job queue as the API sees it: retry, cancel, queue positions.

A thin layer over ``transcoder.queue`` that turns its failures into what a route answers: a
retry the queue cannot take is ``QueueUnavailable`` (503), a cancel is best effort, and queue
positions are unknown (None) while Redis is down. Every call here is blocking; callers run
them in a thread.
"""

from __future__ import annotations

import logging

from redis.exceptions import RedisError
from sqlalchemy.engine import Engine

from models.config import Settings
from transcoder import queue

log = logging.getLogger("tusflow.api")


class QueueUnavailable(RuntimeError):
    """The queue cannot take the request now (Redis unreachable, or it refused)."""


class JobQueue:
    def __init__(self, settings: Settings, engine: Engine):
        self.settings = settings
        self.engine = engine

    def retry(self, media_id: str) -> None:
        """Reset the media to queued and enqueue it; the reset is durable even when Redis is
        down (the queue's reconciler enqueues it later). LookupError: no such media."""
        try:
            queue.retry_media(self.settings, self.engine, media_id)
        except LookupError:
            raise
        except Exception as exc:  # redis errors and whatever the queue refuses with
            raise QueueUnavailable(f"the job queue did not accept the retry: {_one_line(exc)}") from exc

    def cancel(self, media_id: str) -> bool:
        """Best effort: a job that cannot be reached now finds its media row gone when it runs."""
        try:
            queue.cancel_media(self.settings, self.engine, media_id)
            return True
        except Exception as exc:
            log.warning("media=%s cancel failed: %s", media_id, _one_line(exc))
            return False

    def positions(self, media_ids: list[str]) -> dict[str, int | None]:
        """1-based places in the queue, read in one Redis round trip; None where unknown
        (Redis down, not waiting in the queue)."""
        if not media_ids:
            return {}
        try:
            return queue.queue_positions(self.settings, media_ids)
        except RedisError as exc:
            log.debug("queue positions unknown: %s", _one_line(exc))
            return {media_id: None for media_id in media_ids}


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
