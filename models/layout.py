"""Where files live under data_dir. Shared by the tus server and the worker so both agree.

With the file stores (``tus_server.tus.store``, ``models.mediastore.FileMediaStore``) everything
is on one filesystem, so finalizing an upload is a rename, whatever its size. With S3 only
``scratch`` (a worker's own working space) and ``locks`` are used; the stores own the rest, and
nothing outside them should build these paths.
"""

from __future__ import annotations

import os
from pathlib import Path


class Layout:
    def __init__(self, data_dir: Path):
        self.root = Path(data_dir)
        self.uploads = self.root / "uploads"
        self.locks = self.root / "locks"
        self.originals = self.root / "originals"
        self.media = self.root / "media"
        self.scratch = self.root / "scratch"

    def ensure(self) -> None:
        for path in (self.uploads, self.locks, self.originals, self.media, self.scratch):
            path.mkdir(parents=True, exist_ok=True)

    def upload_file(self, upload_id: str) -> Path:
        return self.uploads / upload_id

    def original_file(self, upload_id: str) -> Path:
        return self.originals / upload_id

    def media_dir(self, media_id: str) -> Path:
        return self.media / media_id

    def relative(self, path: Path) -> str:
        return str(Path(path).relative_to(self.root))

    def resolve(self, relative: str) -> Path:
        return self.root / relative

    def finalize(self, upload_id: str) -> Path:
        """Move a completed upload's bytes to originals/. Idempotent, so a crash between the
        database commit and the rename is repaired by calling it again from anywhere."""
        dst = self.original_file(upload_id)
        src = self.upload_file(upload_id)
        if not dst.exists() and src.exists():
            os.replace(src, dst)
        return dst
