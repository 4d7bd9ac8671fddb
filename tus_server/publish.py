"""Completion → media: what an upload's life means to the rest of tusflow.

``UploadLifecycle`` is the ``UploadEvents`` observer (``tus_server.tus.events``) that ties the
tus endpoint to transcoding and webhooks; the handler calls it and imports none of this.

Inside the transaction that records completion a Media row is written in state ``queued`` with
``enqueued_at`` empty: that row is the durable intent to transcode, and the ``upload.completed``
webhook is recorded in the same transaction (``models.outbox``), so it exists exactly when the
completion does. After the commit the store publishes the bytes into originals (the file store
renames them; the S3 store completed them on that key already), the transcode job is
enqueued and the webhook delivery woken; if Redis is down the row stays un-enqueued and the
reconciler (and the webhook sweep) pick it up later, so nothing is lost between the two.
"""

from __future__ import annotations

import logging

import anyio.to_thread
from sqlmodel import Session

from models import outbox
from models.metadata import stored_metadata
from models.lifecycle import MediaState
from models.tables import Media, Upload
from transcoder import webhooks
from transcoder.queue import enqueue_transcode
from tus_server.context import AppContext
from tus_server.tus.datastore import UploadStore
from tus_server.tus.events import NoEvents

log = logging.getLogger("tusflow.publish")


def media_link(media_id: str) -> dict[str, str]:
    return {"Link": f'</api/media/{media_id}>; rel="media"'}


class UploadLifecycle(NoEvents):
    """Created → ``upload.created`` webhook; completed → media row, original, transcode job and
    ``upload.completed`` webhook. Body progress and termination start nothing here."""

    def __init__(self, ctx: AppContext, store: UploadStore):
        self.ctx = ctx
        self.store = store

    async def created(self, upload: Upload) -> None:
        # Partials are skipped by announce_upload: the platform hears of their final instead.
        await anyio.to_thread.run_sync(webhooks.announce_upload, self.ctx.settings, self.ctx.engine,
                                       "upload.created", upload)

    def completing(self, session: Session, upload: Upload) -> None:
        meta = stored_metadata(upload.metadata_raw)
        filename = meta.text("filename") or meta.text("name")
        title = meta.text("title") or _title_from(filename) or "Untitled video"
        original = self.store.published_path(upload.id)
        session.get(Upload, upload.id).storage_path = original  # type: ignore[union-attr]
        if session.get(Media, upload.id) is None:
            session.add(Media(id=upload.id, owner=upload.owner, title=title[:300],
                              description=meta.text("description")[:5000], filename=filename[:300],
                              filetype=(meta.text("filetype") or meta.text("type"))[:100],
                              size=upload.length or 0, source_path=original, state=MediaState.QUEUED))
        row = session.get(Upload, upload.id) or upload
        outbox.record(session, self.ctx.settings, "upload.completed", outbox.upload_data(row), subject=upload.id)

    async def completed(self, upload: Upload) -> dict[str, str]:
        upload.storage_path = await self.store.publish(upload)
        await anyio.to_thread.run_sync(self._enqueue, upload.id)
        await anyio.to_thread.run_sync(self._wake_webhooks, upload.id)
        return media_link(upload.id)

    def completion_headers(self, upload: Upload) -> dict[str, str]:
        return media_link(upload.id) if upload.concat != "partial" else {}

    def _enqueue(self, media_id: str) -> None:
        try:
            enqueue_transcode(self.ctx.settings, self.ctx.engine, media_id)
        except Exception as exc:  # Redis down: the reconciler enqueues it later
            log.warning("media=%s enqueue deferred: %s", media_id, exc)

    def _wake_webhooks(self, upload_id: str) -> None:
        """On any failure the row waits for the worker's sweep instead of failing an upload
        that is already complete."""
        try:
            webhooks.enqueue_subject(self.ctx.settings, self.ctx.engine, upload_id)
        except Exception as exc:
            log.warning("upload=%s webhook not enqueued yet: %s", upload_id, exc)


def _title_from(filename: str) -> str:
    stem = filename.rsplit("/", 1)[-1].rsplit(".", 1)[0]
    return stem.replace("_", " ").replace("-", " ").strip()
