"""Rows and media folders written the way the tus server and the transcoder write them, for
tests that run the app in-process (tests/tus_server/api): a ready media with its ladder, an unfinished
upload, arbitrary column changes."""

from __future__ import annotations

import json
import secrets
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from sqlmodel import Session
from starlette.applications import Starlette

from models.lifecycle import MediaState
from models.tables import Media, Upload

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=timezone.utc)
RENDITIONS = [
    {"name": "240p", "width": 426, "height": 240, "bandwidth": 420000, "average_bandwidth": 380000,
     "codecs": "avc1.64000d,mp4a.40.2", "frame_rate": 25.0, "playlist": "240p/index.m3u8", "internal": "x"},
    {"name": "360p", "width": 640, "height": 360, "bandwidth": 760000, "average_bandwidth": 700000,
     "codecs": "avc1.64001e,mp4a.40.2", "frame_rate": 25.0, "playlist": "360p/index.m3u8"},
]


def new_id() -> str:
    return secrets.token_hex(16)


class Store:
    """Writes what the tus server and the transcoder would have written."""

    def __init__(self, app: Starlette):
        self.ctx = app.state.ctx
        self.engine = self.ctx.engine
        self.layout = self.ctx.layout

    def media(self, media_id: str | None = None, *, created: datetime | None = None,
              state: str = MediaState.READY, owner: str | None = None, **values: Any) -> str:
        media_id = media_id or new_id()
        created = created or datetime.now(timezone.utc)
        fields: dict[str, Any] = dict(id=media_id, title=f"Video {media_id[:6]}", filename="lecture.mp4",
                                      filetype="video/mp4", size=1234, state=state, owner=owner,
                                      created_at=created, updated_at=created,
                                      source_path=f"originals/{media_id}")
        if state == MediaState.READY:
            fields.update(duration=12.5, width=640, height=360, renditions_json=json.dumps(RENDITIONS),
                          has_poster=True, has_storyboard=True, progress=100.0)
        fields.update(values)
        with Session(self.engine) as session:
            session.add(Media(**fields))
            session.add(Upload(id=media_id, length=fields["size"], offset=fields["size"], owner=owner,
                               created_at=created, updated_at=created, completed_at=created,
                               storage_path=f"originals/{media_id}"))
            session.commit()
        self.layout.original_file(media_id).write_bytes(b"x" * 16)
        return media_id

    def upload(self, upload_id: str | None = None, *, created: datetime | None = None, length: int = 1000,
               offset: int = 0, metadata: str = "", owner: str | None = None, **values: Any) -> str:
        upload_id = upload_id or new_id()
        created = created or datetime.now(timezone.utc)
        with Session(self.engine) as session:
            session.add(Upload(id=upload_id, length=length, offset=offset, metadata_raw=metadata, owner=owner,
                               created_at=created, updated_at=created, storage_path=f"uploads/{upload_id}",
                               **values))
            session.commit()
        self.layout.upload_file(upload_id).write_bytes(b"y" * offset)
        return upload_id

    def update(self, media_id: str, **values: Any) -> None:
        with Session(self.engine) as session:
            row = session.get(Media, media_id)
            assert row is not None
            for key, value in values.items():
                setattr(row, key, value)
            session.add(row)
            session.commit()

    def ladder(self, media_id: str, segment_bytes: int = 50_000) -> Path:
        """A media folder shaped like the transcoder's output (content is not real video)."""
        root = self.layout.media_dir(media_id)
        variants = []
        for rung in RENDITIONS:
            folder = root / rung["name"]
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "init.mp4").write_bytes(b"\x00\x00\x00\x18ftypiso6" + bytes(range(256)) * 4)
            lines = ["#EXTM3U", "#EXT-X-VERSION:7", "#EXT-X-TARGETDURATION:6", "#EXT-X-PLAYLIST-TYPE:VOD",
                     "#EXT-X-INDEPENDENT-SEGMENTS", '#EXT-X-MAP:URI="init.mp4"']
            for n in range(3):
                (folder / f"seg_{n:05d}.m4s").write_bytes(secrets.token_bytes(segment_bytes))
                lines += ["#EXTINF:6.000000,", f"seg_{n:05d}.m4s"]
            lines.append("#EXT-X-ENDLIST")
            (folder / "index.m3u8").write_text("\n".join(lines) + "\n")
            variants += [f'#EXT-X-STREAM-INF:BANDWIDTH={rung["bandwidth"]},AVERAGE-BANDWIDTH={rung["average_bandwidth"]},'
                         f'RESOLUTION={rung["width"]}x{rung["height"]},CODECS="{rung["codecs"]}",FRAME-RATE=25.000',
                         rung["playlist"]]
        (root / "master.m3u8").write_text("\n".join(["#EXTM3U", "#EXT-X-VERSION:7", "#EXT-X-INDEPENDENT-SEGMENTS",
                                                     *variants]) + "\n")
        (root / "240p" / "seg_00000.ts").write_bytes(b"G" + secrets.token_bytes(187))
        (root / "poster.jpg").write_bytes(b"\xff\xd8\xff\xe0" + secrets.token_bytes(500))
        (root / "storyboard.jpg").write_bytes(b"\xff\xd8\xff\xe0" + secrets.token_bytes(500))
        (root / "storyboard.vtt").write_text("WEBVTT\n\n" + "\n".join(
            f"00:00:{n * 5:02d}.000 --> 00:00:{n * 5 + 5:02d}.000\nstoryboard.jpg#xywh={n * 160},0,160,90\n"
            for n in range(3)))
        return root


def minutes(n: float) -> timedelta:
    return timedelta(minutes=n)
