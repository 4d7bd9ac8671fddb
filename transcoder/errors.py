"""Errors the worker can act on without reading ffmpeg's stderr.

``permanent`` tells the caller whether a retry can help; ``reason`` is shown to the person who
uploaded the file, so it is one plain sentence. ffmpeg's own words go to ``detail`` (for logs).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from rq.timeouts import JobTimeoutException


class TranscodeError(Exception):
    """Base of every failure ``transcode`` raises on purpose."""

    permanent: bool = False

    def __init__(self, reason: str, *, detail: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.detail = detail

    def __reduce__(self):  # keep ``detail`` when RQ pickles the exception
        return (_rebuild, (type(self), self.reason, self.detail))


def _rebuild(cls: type[TranscodeError], reason: str, detail: str) -> TranscodeError:
    return cls(reason, detail=detail)


class InputRejected(TranscodeError):
    """The upload itself is the problem (not a video, hostile, over limits, truncated)."""

    permanent = True


class FfmpegFailed(TranscodeError):
    """ffmpeg crashed, was killed or ran out of time; the same file may work next time."""

    permanent = False


class TranscodeCancelled(FfmpegFailed):
    """``should_stop()`` asked us to stop; not the file's fault, so not permanent."""


TIMED_OUT = "The conversion took longer than allowed and was stopped."
UNEXPECTED = "The server hit an unexpected error while converting this video ({})."


@dataclass(frozen=True)
class Failure:
    """What a failed attempt records: the sentence a person reads, whether retrying is futile,
    and the detail for the logs. One mapping for the whole-video job and the part jobs."""

    reason: str
    permanent: bool
    detail: str


def failure_of(exc: BaseException) -> Failure:
    if isinstance(exc, TranscodeError):
        return Failure(exc.reason, exc.permanent, exc.detail)
    if isinstance(exc, JobTimeoutException):
        return Failure(TIMED_OUT, False, str(exc))
    return Failure(UNEXPECTED.format(type(exc).__name__), False, f"{type(exc).__name__}: {exc}")


def report_failure(failed: Callable[..., None], exc: BaseException) -> None:
    """Hand a failed try to its job's ``_failed`` (which decides: retry, or fail the media),
    the same way for the video job and the part jobs; the caller re-raises for RQ."""
    failure = failure_of(exc)
    failed(failure.reason, permanent=failure.permanent, detail=failure.detail)
