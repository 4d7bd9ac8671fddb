"""One line per event, ``key=value`` fields, the media id on every line about a media.

Our own events are written with :func:`event`. RQ's lines (``Job OK (transcode-<id>)``,
tracebacks of failed jobs) are rewritten by :class:`LogfmtFormatter` so they carry
``media=<id>`` too and never span several lines: grepping one media's story out of the output
of several workers is then ``grep media=<id>``.
"""

from __future__ import annotations

import logging
import re
import sys
import traceback
from typing import Any

# A media id is its upload id, so the tus server's "upload=<id>" lines name the media too.
JOB_ID_RE = re.compile(r"\b(?:transcode-|media=|upload=)([0-9a-fA-F]{8,64})(?:-\d+)?\b")
_BARE = re.compile(r"^[\w.:/@+-]+$")


def fmt_value(value: Any) -> str:
    """A logfmt value: bare when safe, else double-quoted with escapes, never a newline."""
    if value is None:
        return "-"
    if isinstance(value, float):
        text = f"{value:.3f}".rstrip("0").rstrip(".") if value == value else "nan"
    else:
        text = str(value)
    if text and _BARE.match(text):
        return text
    text = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "")
    return f'"{text}"'


def fields(**values: Any) -> str:
    return " ".join(f"{key}={fmt_value(value)}" for key, value in values.items())


def event(logger: logging.Logger, name: str, media_id: str | None = None, *,
          level: int = logging.INFO, **values: Any) -> None:
    """Log ``event=<name> media=<id> k=v ...`` as one line."""
    head = f"event={name}"
    if media_id is not None:
        head += f" media={fmt_value(media_id)}"
    tail = fields(**values)
    logger.log(level, head + (" " + tail if tail else ""))


def media_from_job_id(job_id: str | None) -> str | None:
    match = JOB_ID_RE.search(job_id or "")
    return match.group(1) if match else None


class LogfmtFormatter(logging.Formatter):
    """``ts= level= logger= pid=`` then the event's own fields (or ``msg="..."``)."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        parts = [f"ts={self.formatTime(record, '%Y-%m-%dT%H:%M:%S')}.{int(record.msecs):03d}",
                 f"level={record.levelname}", f"logger={record.name}", f"pid={record.process}"]
        structured = message.startswith("event=")
        if not structured or " media=" not in message:
            media = media_from_job_id(message)
            if media is None and record.exc_info and record.exc_info[1] is not None:
                media = media_from_job_id(str(record.exc_info[1]))
            if media is not None:
                parts.append(f"media={media}")
        parts.append(message if structured else f"msg={fmt_value(message)}")
        if record.exc_info and record.exc_info[0] is not None:
            exc_type, exc, tb = record.exc_info
            where = traceback.extract_tb(tb)[-1] if tb else None
            parts.append(f"exc={fmt_value(exc_type.__name__ + ': ' + str(exc))}")
            if where is not None:
                parts.append(f"at={fmt_value(f'{where.filename}:{where.lineno}')}")
        return " ".join(parts)


def configure(level: str | int = "INFO") -> None:
    """Send every logger to stdout through :class:`LogfmtFormatter` (worker, up, jobs)."""
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(logging.StreamHandler(sys.stdout))
    for handler in root.handlers:
        handler.setFormatter(LogfmtFormatter())
    root.setLevel(level)
    # RQ adds its own colourising handlers unless an ancestor already has one; make sure its
    # loggers propagate to ours so every line has the same shape.
    for name in ("rq", "rq.worker", "rq.job", "rq.scheduler", "rq.queue", "rq.registry"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
