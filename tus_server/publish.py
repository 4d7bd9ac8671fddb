"""Completion → media: the seam between the tus endpoint and transcoding.

Inside the transaction that records completion a Media row is written in state ``queued`` with
``enqueued_at`` empty: that row is the durable intent to transcode. After the commit the bytes
are renamed into originals/ and the job is enqueued; if Redis is down the row stays
un-enqueued and the reconciler enqueues it later, so nothing is lost between the two.
"""

from __future__ import annotations

import logging

import anyio.to_thread
from sqlmodel import Session

from models.metadata import stored_metadata
from models import outbox
from models.config import Settings
from models.lifecycle import MediaState
from models.tables import Media, Upload
from transcoder import webhooks
from transcoder.queue import enqueue_transcode
from tus_server.context import AppContext

log = logging.getLogger("tusflow.publish")


def media_link(media_id: str) -> dict[str, str]:
    return {"Link": f'</api/media/{media_id}>; rel="media"'}


class Publisher:
    def __init__(self, ctx: AppContext):
        self.ctx = ctx

    def in_transaction(self, session: Session, upload: Upload) -> None:
        meta = stored_metadata(upload.metadata_raw)
        filename = meta.text("filename") or meta.text("name")
        title = meta.text("title") or _title_from(filename) or "Untitled video"
        original = self.ctx.layout.relative(self.ctx.layout.original_file(upload.id))
        session.get(Upload, upload.id).storage_path = original  # type: ignore[union-attr]
        if session.get(Media, upload.id) is None:
            session.add(Media(id=upload.id, owner=upload.owner, title=title[:300],
                              description=meta.text("description")[:5000], filename=filename[:300],
                              filetype=(meta.text("filetype") or meta.text("type"))[:100],
                              size=upload.length or 0, source_path=original, state=MediaState.QUEUED))
        _announce(session, self.ctx.settings, "upload.completed", session.get(Upload, upload.id) or upload)

    async def after_commit(self, upload: Upload) -> dict[str, str]:
        await anyio.to_thread.run_sync(self.ctx.layout.finalize, upload.id)
        upload.storage_path = self.ctx.layout.relative(self.ctx.layout.original_file(upload.id))
        await anyio.to_thread.run_sync(self._enqueue, upload.id)
        await anyio.to_thread.run_sync(_announce_after_commit, self.ctx, upload.id)
        return media_link(upload.id)

    def _enqueue(self, media_id: str) -> None:
        try:
            enqueue_transcode(self.ctx.settings, self.ctx.engine, media_id)
        except Exception as exc:  # Redis down: the reconciler enqueues it later
            log.warning("media=%s enqueue deferred: %s", media_id, exc)

    def headers_for(self, upload: Upload) -> dict[str, str]:
        return media_link(upload.id) if upload.concat != "partial" else {}


def _title_from(filename: str) -> str:
    stem = filename.rsplit("/", 1)[-1].rsplit(".", 1)[0]
    return stem.replace("_", " ").replace("-", " ").strip()


def _announce(session: Session, settings: Settings, event: str, upload: Upload) -> None:
    """Record the webhook in the completion transaction, so it exists exactly when the
    completion does (a crash right after the commit cannot lose it)."""
    outbox.record(session, settings, event, outbox.upload_data(upload), subject=upload.id)


def _announce_after_commit(ctx: AppContext, upload_id: str) -> None:
    """Wake the delivery; on any failure the row waits for the worker's sweep instead of
    failing an upload that is already complete."""
    try:
        webhooks.enqueue_subject(ctx.settings, ctx.engine, upload_id)
    except Exception as exc:
        log.warning("upload=%s webhook not enqueued yet: %s", upload_id, exc)
