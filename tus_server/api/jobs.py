"""The job queue as the API sees it: retry, cancel, queue position.

``transcoder.queue`` is imported on first use, not at import time, so the web app runs (and its
pages stay useful) in a build without the transcoder or while Redis is down. Every call here is
blocking; callers run them in a thread.
"""

from __future__ import annotations

import logging
from types import ModuleType
from typing import Any

from sqlalchemy.engine import Engine

from models.config import Settings

log = logging.getLogger("tusflow.api")


class QueueUnavailable(RuntimeError):
    """The queue cannot take the request now (transcoder not installed, Redis unreachable)."""


class JobQueue:
    def __init__(self, settings: Settings, engine: Engine):
        self.settings = settings
        self.engine = engine
        self._module: ModuleType | None = None

    def _queue(self) -> ModuleType:
        if self._module is None:
            try:
                import transcoder.queue as module
            except ImportError as exc:
                raise QueueUnavailable("transcoding is not installed on this server") from exc
            self._module = module
        return self._module

    def retry(self, media_id: str) -> None:
        """Reset the media to queued and enqueue it; the reset is durable even when Redis is
        down (the queue's reconciler enqueues it later). LookupError: no such media."""
        try:
            self._queue().retry_media(self.settings, self.engine, media_id)
        except (QueueUnavailable, LookupError):
            raise
        except Exception as exc:  # redis errors and whatever the queue refuses with
            raise QueueUnavailable(f"the job queue did not accept the retry: {_one_line(exc)}") from exc

    def cancel(self, media_id: str) -> bool:
        """Best effort: a job that cannot be reached now finds its media row gone when it runs."""
        try:
            self._queue().cancel_media(self.settings, self.engine, media_id)
            return True
        except Exception as exc:
            log.warning("media=%s cancel failed: %s", media_id, _one_line(exc))
            return False

    def positions(self, media_ids: list[str]) -> dict[str, int | None]:
        """1-based places in the queue; None where unknown (no queue, Redis down, not queued)."""
        result: dict[str, int | None] = {media_id: None for media_id in media_ids}
        if not media_ids:
            return result
        try:
            queue_position = self._queue().queue_position
        except QueueUnavailable:
            return result
        for media_id in media_ids:
            try:
                result[media_id] = _as_position(queue_position(self.settings, media_id))
            except Exception as exc:
                log.debug("media=%s queue position unknown: %s", media_id, _one_line(exc))
                break  # Redis is down: do not pay the failure once per item
        return result


def _as_position(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
