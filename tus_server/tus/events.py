"""The one seam between the tus endpoint and everything that reacts to uploads.

The handler knows the tus protocol and nothing else: it announces what happened to an upload
through an ``UploadEvents`` object it is given (``TusContext.events``), built once in
``tus_server.app.create_app``. Publishing (media row, transcode job, webhook outbox:
``tus_server.publish.UploadLifecycle``) and upload metrics (``tus_server.metrics.UploadMetrics``)
are two such observers, joined by ``FanOut``; the handler imports neither, so a new reaction to
an upload is a new observer, not an edit of the protocol code.

Completion has two halves because it must be exactly-once and durable: ``completing`` runs
inside the database transaction that marks the upload complete (what it writes commits with the
completion or not at all), ``completed`` runs after that commit, once, for the request that won
the race. Both are called for non-partial uploads only: a partial is a piece of a parallel
upload and means nothing to anyone until its final upload is built.
"""

from __future__ import annotations

from typing import Protocol

from sqlmodel import Session

from models.tables import Upload


class UploadEvents(Protocol):
    async def created(self, upload: Upload) -> None:
        """A new upload row exists (plain, partial or an assembled final)."""

    def receiving(self, upload: Upload, active: bool) -> None:
        """A request starts (``True``) or stops (``False``) reading body bytes for the upload."""

    def progress(self, upload: Upload, nbytes: int) -> None:
        """``nbytes`` more body bytes were read from the client, as they arrive. With a
        checksum they are staged first and may still be refused, so this counts bytes
        received, not bytes stored; the stored offset is ``upload.offset``."""

    def completing(self, session: Session, upload: Upload) -> None:
        """Inside the transaction that records completion of a non-partial upload."""

    async def completed(self, upload: Upload) -> dict[str, str]:
        """After that transaction committed, once per upload; returns headers for the answer."""

    def completion_headers(self, upload: Upload) -> dict[str, str]:
        """Headers on later answers about an upload that is already complete (HEAD, a retry)."""

    async def terminated(self, upload: Upload) -> None:
        """The upload was deleted by its client (tus termination)."""

    def patch_answered(self, status: int | None, seconds: float) -> None:
        """A PATCH request ended: its status (``None`` when no answer was built) and wall time
        from reaching the tus endpoint to the end of the answer."""


class NoEvents:
    """Reacts to nothing: the base of observers that care about a few events, and the test
    double for handler tests that need no publishing."""

    async def created(self, upload: Upload) -> None:
        return None

    def receiving(self, upload: Upload, active: bool) -> None:
        return None

    def progress(self, upload: Upload, nbytes: int) -> None:
        return None

    def completing(self, session: Session, upload: Upload) -> None:
        return None

    async def completed(self, upload: Upload) -> dict[str, str]:
        return {}

    def completion_headers(self, upload: Upload) -> dict[str, str]:
        return {}

    async def terminated(self, upload: Upload) -> None:
        return None

    def patch_answered(self, status: int | None, seconds: float) -> None:
        return None


class FanOut:
    """Several observers as one, called in order; answer headers are merged (later wins)."""

    def __init__(self, *observers: UploadEvents):
        self.observers = observers

    async def created(self, upload: Upload) -> None:
        for o in self.observers:
            await o.created(upload)

    def receiving(self, upload: Upload, active: bool) -> None:
        for o in self.observers:
            o.receiving(upload, active)

    def progress(self, upload: Upload, nbytes: int) -> None:
        for o in self.observers:
            o.progress(upload, nbytes)

    def completing(self, session: Session, upload: Upload) -> None:
        for o in self.observers:
            o.completing(session, upload)

    async def completed(self, upload: Upload) -> dict[str, str]:
        headers: dict[str, str] = {}
        for o in self.observers:
            headers.update(await o.completed(upload))
        return headers

    def completion_headers(self, upload: Upload) -> dict[str, str]:
        headers: dict[str, str] = {}
        for o in self.observers:
            headers.update(o.completion_headers(upload))
        return headers

    async def terminated(self, upload: Upload) -> None:
        for o in self.observers:
            await o.terminated(upload)

    def patch_answered(self, status: int | None, seconds: float) -> None:
        for o in self.observers:
            o.patch_answered(status, seconds)
