"""Errors the worker can act on without reading ffmpeg's stderr.

``permanent`` tells the caller whether a retry can help; ``reason`` is shown to the person who
uploaded the file, so it is one plain sentence. ffmpeg's own words go to ``detail`` (for logs).
"""

from __future__ import annotations


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
