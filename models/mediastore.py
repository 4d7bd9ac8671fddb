"""Where a video's original and its published output (HLS, poster, storyboard) live.

The worker and the web app reach them only through ``MediaStore``, so a worker on a host that
shares nothing with the app but PostgreSQL, Redis and the bucket can transcode, and any
instance can serve playback. Two stores, chosen from ``[storage] backend`` by
``open_media_store``:

- ``FileMediaStore``: data_dir on one machine (``models.layout``). Publishing is a rename into
  ``media/<id>/`` (one rename per rendition, or one swap for a whole ladder) and the master is
  written beside itself and renamed over the old one.
- ``S3MediaStore``: the same bucket and prefix as the S3 upload store, keys
  ``<prefix>media/<id>/<path>``. S3 has no rename, so the order of writes gives the same
  promise: every object of a rendition, then its media playlist, then the master last. A
  player that can read the master finds every file it names.

A player never sees a rendition before all of it exists, in either store. What the worker
makes locally lives in ``Scratch`` (its own disk, never shared) and is removed whatever happens,
by the attempt itself or, after a killed worker, at the next claim on that host.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Protocol

from models.config import S3Config, Settings
from models.layout import Layout
from models.lifecycle import default_job_id
from models.s3client import is_missing, make_client

MASTER = "master.m3u8"
STAGING = "staging"       # S3: <prefix>staging/<id>/<generation>/
PARTS_SUFFIX = ".parts"   # file store: scratch/<id>.parts[-N]/ (the generation's suffix)
DONE = "done.json"        # a committed part's marker, written last
PLAYLIST_SUFFIX = ".m3u8"
CHUNK = 256 * 1024
UPLOAD_THREADS = 8
# What a CDN or the bucket's website should send for each kind of file (the app's own delivery
# decides its headers itself, tus_server.delivery).
CONTENT_TYPES = {
    ".m3u8": ("application/vnd.apple.mpegurl", "public, max-age=60"),
    ".mp4": ("video/mp4", "public, max-age=31536000, immutable"),
    ".m4s": ("video/iso.segment", "public, max-age=31536000, immutable"),
    ".ts": ("video/mp2t", "public, max-age=31536000, immutable"),
    ".aac": ("audio/aac", "public, max-age=31536000, immutable"),
    ".vtt": ("text/vtt; charset=utf-8", "public, max-age=3600"),
    ".jpg": ("image/jpeg", "public, max-age=3600"),
    ".jpeg": ("image/jpeg", "public, max-age=3600"),
}


@dataclass(frozen=True)
class StoredFile:
    """One published file as delivery needs it. ``path`` is set when the file is on this
    machine (the file store): it is then served from disk as it always was."""

    size: int
    modified: float  # seconds since the epoch
    etag: str  # quoted, as in an ETag header
    path: Path | None = None


class MediaStore(Protocol):
    """Originals in, published output out; every call is blocking (run it in a thread)."""

    # --- the worker
    def fetch_original(self, media_id: str, dest: Path, source_path: str = "") -> Path:
        """A local path to the original: the file store's own file, or ``dest`` after a
        download. FileNotFoundError when it is not stored."""
        ...

    def publish_rendition(self, media_id: str, local_dir: Path, name: str) -> None:
        """Make the complete folder ``local_dir`` visible as ``<id>/<name>/``, all at once as
        far as the master is concerned (an older one of that name is replaced)."""
        ...

    def publish_file(self, media_id: str, local_file: Path, name: str) -> None:
        """One file (poster, storyboard sprite or track) as ``<id>/<name>``."""
        ...

    def write_master(self, media_id: str, text: str) -> None:
        """Replace the master playlist; readers get the old one or the new one."""
        ...

    def publish_ladder(self, media_id: str, local_dir: Path) -> None:
        """Make the complete output folder ``local_dir`` the media's output, replacing an
        older one; the master becomes visible last."""
        ...

    def delete_output(self, media_id: str) -> None:
        """Remove everything published for the media."""
        ...

    # --- chunk staging: a chunked generation's plan and finished parts, shared by every worker
    def put_staged(self, media_id: str, generation: str, name: str, data: dict[str, Any]) -> None:
        """A small JSON object of the generation (its plan), replaced whole."""
        ...

    def get_staged(self, media_id: str, generation: str, name: str) -> dict[str, Any] | None:
        ...

    def commit_part(self, media_id: str, generation: str, part: str, local_dir: Path,
                    facts: dict[str, Any]) -> None:
        """Make the complete folder ``local_dir`` the part ``part``, with its marker ``facts``:
        readers see no part, or all of it (a half-written run is never visible), and a later
        run replaces an earlier one cleanly."""
        ...

    def part_facts(self, media_id: str, generation: str, part: str) -> dict[str, Any] | None:
        """The committed part's marker, None while it is not committed."""
        ...

    def fetch_part(self, media_id: str, generation: str, part: str, dest: Path) -> Path | None:
        """A local folder with the committed part's files (in place, or downloaded into
        ``dest``); None when the part is not committed."""
        ...

    def staged_parts(self, media_id: str, generation: str) -> list[str]:
        """The committed parts of the generation."""
        ...

    def delete_staging(self, media_id: str, keep: str = "") -> None:
        """Remove the staging of every generation of the media but ``keep``."""
        ...

    # --- the web app
    def delete_media(self, media_id: str, source_paths: list[str]) -> None:
        """Remove the media's original (and the given upload paths), its output and staging."""
        ...

    def stat(self, media_id: str, path: str) -> StoredFile | None:
        """A published file (``path`` already checked to be plain names), None if absent."""
        ...

    def read(self, media_id: str, path: str) -> bytes | None:
        """A small published file whole (playlists, storyboards)."""
        ...

    def chunks(self, media_id: str, path: str, start: int, end: int) -> Iterator[bytes]:
        """Bytes [start, end) of a published file, streamed."""
        ...


def open_media_store(settings: Settings, layout: Layout | None = None) -> MediaStore:
    """The media store ``[storage] backend`` names."""
    if settings.storage.backend == "s3":
        return S3MediaStore(settings.storage.s3)
    return FileMediaStore(layout or Layout(settings.data_dir))


# ------------------------------------------------------------------------------ local helpers
def write_atomic(path: Path, text: str) -> None:
    """``text`` written beside ``path``, flushed and renamed over it."""
    tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def place(src: Path, root: Path, name: str, trash: Path) -> None:
    """Make ``src`` visible as ``root/name`` with one rename; an older one of that name (an
    earlier run) is moved aside first and removed."""
    root.mkdir(parents=True, exist_ok=True)
    dest = root / name
    try:
        os.rename(src, dest)
        return
    except OSError as exc:
        if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.EISDIR, errno.ENOTDIR):
            raise
    trash.mkdir(parents=True, exist_ok=True)
    old = trash / f".replaced-{name}-{uuid.uuid4().hex[:8]}"
    os.rename(dest, old)
    os.rename(src, dest)
    if old.is_dir():
        shutil.rmtree(old, ignore_errors=True)
    else:
        old.unlink(missing_ok=True)


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically with renameat2(RENAME_EXCHANGE); False when unsupported."""
    import ctypes
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                          ctypes.c_uint]
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EPERM, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def publish_dir(staged: Path, target: Path, trash: Path) -> None:
    """Make the complete directory ``staged`` visible as ``target`` in one step.

    A first publish is a rename. Replacing an older ladder swaps the two directories in one
    renameat2 call, so ``target`` is never missing nor mixed; where the kernel lacks it, two
    renames leave a moment without ``target`` but never a half-written one.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.rename(staged, target)  # replaces nothing or an empty directory
        return
    except OSError as exc:
        if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
            raise
    if _exchange(staged, target):
        shutil.rmtree(staged, ignore_errors=True)  # now holds the older ladder
        return
    trash.mkdir(parents=True, exist_ok=True)
    old = trash / f"{target.name}.replaced.{uuid.uuid4().hex[:8]}"
    os.rename(target, old)
    os.rename(staged, target)
    shutil.rmtree(old, ignore_errors=True)


def _files(folder: Path) -> list[tuple[Path, str]]:
    """Every file under ``folder`` with its path relative to it, playlists after the rest
    (deeper playlists first, so a folder's media playlists precede a top-level master)."""
    found = [(p, p.relative_to(folder).as_posix()) for p in sorted(folder.rglob("*")) if p.is_file()]
    rest = [f for f in found if not f[1].endswith(PLAYLIST_SUFFIX)]
    lists = sorted((f for f in found if f[1].endswith(PLAYLIST_SUFFIX)),
                   key=lambda f: (-f[1].count("/"), f[1]))
    return rest + lists


# ------------------------------------------------------------------------------ file store
class FileMediaStore:
    """data_dir on one machine: originals/<id>, media/<id>/ (``models.layout``)."""

    def __init__(self, layout: Layout):
        self.layout = layout

    def fetch_original(self, media_id: str, dest: Path, source_path: str = "") -> Path:
        layout = self.layout
        path = layout.resolve(source_path) if source_path else layout.original_file(media_id)
        if not path.exists() and layout.upload_file(media_id).exists():
            layout.finalize(media_id)  # a crash between the completion's commit and its rename
            path = layout.original_file(media_id)
        if not path.is_file():
            raise FileNotFoundError(f"original of {media_id} is not stored")
        return path  # read in place: a copy would only cost disk and time

    def publish_rendition(self, media_id: str, local_dir: Path, name: str) -> None:
        place(local_dir, self.layout.media_dir(media_id), name, self.layout.scratch)

    def publish_file(self, media_id: str, local_file: Path, name: str) -> None:
        place(local_file, self.layout.media_dir(media_id), name, self.layout.scratch)

    def write_master(self, media_id: str, text: str) -> None:
        root = self.layout.media_dir(media_id)
        root.mkdir(parents=True, exist_ok=True)
        write_atomic(root / MASTER, text)

    def publish_ladder(self, media_id: str, local_dir: Path) -> None:
        publish_dir(local_dir, self.layout.media_dir(media_id), self.layout.scratch)

    def delete_output(self, media_id: str) -> None:
        shutil.rmtree(self.layout.media_dir(media_id), ignore_errors=True)

    # --- chunk staging: scratch/<id>.parts[-N]/ on the shared data_dir
    def staging_dir(self, media_id: str, generation: str) -> Path:
        return self.layout.scratch / f"{media_id}{PARTS_SUFFIX}{generation_suffix(media_id, generation)}"

    def put_staged(self, media_id: str, generation: str, name: str, data: dict[str, Any]) -> None:
        folder = self.staging_dir(media_id, generation)
        folder.mkdir(parents=True, exist_ok=True)
        write_atomic(folder / name, json.dumps(data))

    def get_staged(self, media_id: str, generation: str, name: str) -> dict[str, Any] | None:
        return _json_or_none(self.staging_dir(media_id, generation) / name)

    def commit_part(self, media_id: str, generation: str, part: str, local_dir: Path,
                    facts: dict[str, Any]) -> None:
        """The marker inside the folder, then one rename (``place``) into the staging."""
        write_atomic(local_dir / DONE, json.dumps(facts))
        place(local_dir, self.staging_dir(media_id, generation), part, self.layout.scratch)

    def part_facts(self, media_id: str, generation: str, part: str) -> dict[str, Any] | None:
        return _json_or_none(self.staging_dir(media_id, generation) / part / DONE)

    def fetch_part(self, media_id: str, generation: str, part: str, dest: Path) -> Path | None:
        folder = self.staging_dir(media_id, generation) / part
        return folder if (folder / DONE).is_file() else None  # read in place

    def staged_parts(self, media_id: str, generation: str) -> list[str]:
        folder = self.staging_dir(media_id, generation)
        return sorted(marker.parent.name for marker in folder.glob(f"*/{DONE}"))

    def delete_staging(self, media_id: str, keep: str = "") -> None:
        kept = self.staging_dir(media_id, keep) if keep else None
        for folder in self.layout.scratch.glob(f"{media_id}{PARTS_SUFFIX}*"):
            if folder != kept:
                shutil.rmtree(folder, ignore_errors=True)

    def delete_media(self, media_id: str, source_paths: list[str]) -> None:
        layout = self.layout
        self.delete_staging(media_id)
        paths = [layout.original_file(media_id), layout.upload_file(media_id),
                 layout.uploads / f"{media_id}.stage"]
        for relative in source_paths:
            if relative:
                candidate = layout.resolve(relative)
                if _inside(candidate, layout.root):
                    paths.append(candidate)
        for path in paths:
            try:
                path.unlink()
            except (FileNotFoundError, IsADirectoryError):
                pass
        self.delete_output(media_id)

    def _locate(self, media_id: str, path: str) -> Path | None:
        """The file, when it resolves inside the media's folder (a symlink cannot lead out)."""
        root = self.layout.media_dir(media_id)
        try:
            real_root = root.resolve(strict=True)
            target = root.joinpath(*path.split("/")).resolve(strict=True)
        except (FileNotFoundError, NotADirectoryError, RuntimeError, OSError):
            return None
        if not target.is_relative_to(real_root) or not target.is_file():
            return None
        return target

    def stat(self, media_id: str, path: str) -> StoredFile | None:
        target = self._locate(media_id, path)
        if target is None:
            return None
        st = target.stat()
        return StoredFile(st.st_size, st.st_mtime, f'"{st.st_mtime_ns:x}-{st.st_size:x}"', target)

    def read(self, media_id: str, path: str) -> bytes | None:
        target = self._locate(media_id, path)
        try:
            return target.read_bytes() if target is not None else None
        except OSError:
            return None

    def chunks(self, media_id: str, path: str, start: int, end: int) -> Iterator[bytes]:
        target = self._locate(media_id, path)
        if target is None:
            raise FileNotFoundError(path)
        with open(target, "rb") as fh:
            fh.seek(start)
            left = end - start
            while left > 0:
                data = fh.read(min(CHUNK, left))
                if not data:
                    return
                left -= len(data)
                yield data


def generation_suffix(media_id: str, generation: str) -> str:
    """``""`` for the first generation (``transcode-<id>``), ``-N`` after it."""
    return generation[len(default_job_id(media_id)):]


def _json_or_none(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _inside(path: Path, root: Path) -> bool:
    try:
        return path.resolve().is_relative_to(root.resolve())
    except OSError:
        return False


# ------------------------------------------------------------------------------ S3 store
class S3MediaStore:
    """The bucket of ``[storage.s3]``: originals at ``<prefix>originals/<id>`` (where the S3
    upload store completes them), output at ``<prefix>media/<id>/``."""

    def __init__(self, cfg: S3Config, client: Any = None):
        self.cfg = cfg
        self.bucket = cfg.bucket
        self.prefix = cfg.prefix
        self.client = client or make_client(cfg, UPLOAD_THREADS * 2)

    def key(self, media_id: str, path: str = "") -> str:
        return f"{self.prefix}media/{media_id}/{path}"

    # --- the worker
    def fetch_original(self, media_id: str, dest: Path, source_path: str = "") -> Path:
        """Downloaded with ranged GETs in parallel (boto3's transfer manager) into ``dest``,
        through a temporary name, so a half download is never taken for the original."""
        from boto3.s3.transfer import TransferConfig
        key = self.prefix + (source_path or f"originals/{media_id}")
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.client.download_file(self.bucket, key, str(dest), Config=TransferConfig(
                multipart_chunksize=8 * 1024**2, max_concurrency=4))
        except Exception as exc:
            if is_missing(exc):
                raise FileNotFoundError(f"original of {media_id} is not stored ({key})") from exc
            raise
        return dest

    def _put(self, local: Path, key: str) -> None:
        kind = CONTENT_TYPES.get(local.suffix.lower())
        extra = {"ContentType": kind[0], "CacheControl": kind[1]} if kind else {}
        with open(local, "rb") as fh:
            self.client.put_object(Bucket=self.bucket, Key=key, Body=fh, **extra)

    def _put_all(self, files: list[tuple[Path, str]], base: str) -> None:
        """Upload ``files`` under ``base``: everything but the playlists in parallel, then the
        playlists one by one in the order given (``_files`` puts them last)."""
        rest = [f for f in files if not f[1].endswith(PLAYLIST_SUFFIX)]
        lists = [f for f in files if f[1].endswith(PLAYLIST_SUFFIX)]
        if rest:
            with ThreadPoolExecutor(UPLOAD_THREADS, "tusflow-publish") as pool:
                for done in [pool.submit(self._put, p, base + rel) for p, rel in rest]:
                    done.result()  # the first failure is raised: nothing after it is published
        for path, rel in lists:
            self._put(path, base + rel)

    def _keys(self, prefix: str) -> list[str]:
        keys: list[str] = []
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            keys.extend(item["Key"] for item in page.get("Contents", []))
        return keys

    def _delete(self, keys: list[str]) -> None:
        for start in range(0, len(keys), 1000):
            batch = [{"Key": k} for k in keys[start:start + 1000]]
            if batch:
                self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})

    def _drop_stale(self, prefix: str, keep: set[str]) -> None:
        """Objects of an earlier run that the new output does not have (the new playlists no
        longer name them)."""
        self._delete([k for k in self._keys(prefix) if k not in keep])

    def publish_rendition(self, media_id: str, local_dir: Path, name: str) -> None:
        base = self.key(media_id, f"{name}/")
        files = _files(local_dir)
        self._put_all(files, base)
        self._drop_stale(base, {base + rel for _, rel in files})

    def publish_file(self, media_id: str, local_file: Path, name: str) -> None:
        if local_file.is_dir():
            self.publish_rendition(media_id, local_file, name)
            return
        self._put(local_file, self.key(media_id, name))

    def write_master(self, media_id: str, text: str) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self.key(media_id, MASTER), Body=text.encode("utf-8"),
                               ContentType=CONTENT_TYPES[".m3u8"][0], CacheControl=CONTENT_TYPES[".m3u8"][1])

    def publish_ladder(self, media_id: str, local_dir: Path) -> None:
        base = self.key(media_id)
        files = _files(local_dir)
        master = [f for f in files if f[1] == MASTER]
        self._put_all([f for f in files if f[1] != MASTER] + master, base)
        self._drop_stale(base, {base + rel for _, rel in files})

    def delete_output(self, media_id: str) -> None:
        self._delete(self._keys(self.key(media_id)))

    # --- chunk staging: <prefix>staging/<id>/<generation>/, only the store shared
    def staging_key(self, media_id: str, generation: str = "", path: str = "") -> str:
        base = f"{self.prefix}{STAGING}/{media_id}/"
        return base + (f"{generation}/{path}" if generation else "")

    def _get_json(self, key: str) -> dict[str, Any] | None:
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"]
        except Exception as exc:
            if is_missing(exc):
                return None
            raise
        try:
            return json.loads(body.read())
        except ValueError:
            return None
        finally:
            body.close()

    def put_staged(self, media_id: str, generation: str, name: str, data: dict[str, Any]) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self.staging_key(media_id, generation, name),
                               Body=json.dumps(data).encode("utf-8"))

    def get_staged(self, media_id: str, generation: str, name: str) -> dict[str, Any] | None:
        return self._get_json(self.staging_key(media_id, generation, name))

    def commit_part(self, media_id: str, generation: str, part: str, local_dir: Path,
                    facts: dict[str, Any]) -> None:
        """Every file under a prefix of this run's own (``<part>/<run>/``), then the marker
        ``<part>/done.json`` naming the run: one PUT makes the part visible whole, and a later
        run's marker replaces an earlier one's (whose files are then dropped)."""
        run = uuid.uuid4().hex[:12]
        base = self.staging_key(media_id, generation, f"{part}/{run}/")
        self._put_all(_files(local_dir), base)
        marker = self.staging_key(media_id, generation, f"{part}/{DONE}")
        self.client.put_object(Bucket=self.bucket, Key=marker,
                               Body=json.dumps({**facts, "_run": run}).encode("utf-8"))
        self._delete([k for k in self._keys(self.staging_key(media_id, generation, f"{part}/"))
                      if k != marker and not k.startswith(base)])

    def part_facts(self, media_id: str, generation: str, part: str) -> dict[str, Any] | None:
        facts = self._get_json(self.staging_key(media_id, generation, f"{part}/{DONE}"))
        if facts is not None:
            facts.pop("_run", None)
        return facts

    def fetch_part(self, media_id: str, generation: str, part: str, dest: Path) -> Path | None:
        facts = self._get_json(self.staging_key(media_id, generation, f"{part}/{DONE}"))
        if facts is None:
            return None
        base = self.staging_key(media_id, generation, f"{part}/{facts['_run']}/")
        shutil.rmtree(dest, ignore_errors=True)
        dest.mkdir(parents=True)

        def get(key: str) -> None:
            target = dest.joinpath(*key[len(base):].split("/"))
            target.parent.mkdir(parents=True, exist_ok=True)
            self.client.download_file(self.bucket, key, str(target))

        with ThreadPoolExecutor(UPLOAD_THREADS, "tusflow-staging") as pool:
            for done in [pool.submit(get, k) for k in self._keys(base)]:
                done.result()
        (dest / DONE).write_text(json.dumps({k: v for k, v in facts.items() if k != "_run"}),
                                 encoding="utf-8")
        return dest

    def staged_parts(self, media_id: str, generation: str) -> list[str]:
        base = self.staging_key(media_id, generation)
        return sorted({k[len(base):].split("/")[0] for k in self._keys(base)
                       if k.endswith(f"/{DONE}") and k[len(base):].count("/") == 1})

    def delete_staging(self, media_id: str, keep: str = "") -> None:
        kept = self.staging_key(media_id, keep) if keep else None
        self._delete([k for k in self._keys(self.staging_key(media_id))
                      if kept is None or not k.startswith(kept)])

    # --- the web app
    def delete_media(self, media_id: str, source_paths: list[str]) -> None:
        self.delete_staging(media_id)
        keys = {f"{self.prefix}originals/{media_id}"}
        keys.update(self.prefix + p for p in source_paths if p)
        keys.update(self._keys(f"{self.prefix}uploads/{media_id}"))
        self._delete(sorted(keys))
        self.delete_output(media_id)

    def stat(self, media_id: str, path: str) -> StoredFile | None:
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=self.key(media_id, path))
        except Exception as exc:
            if is_missing(exc):
                return None
            raise
        etag = str(head.get("ETag") or "")
        if etag and not etag.startswith('"'):
            etag = f'"{etag}"'
        modified = head.get("LastModified")
        return StoredFile(int(head["ContentLength"]), modified.timestamp() if modified else time.time(), etag)

    def read(self, media_id: str, path: str) -> bytes | None:
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=self.key(media_id, path))["Body"]
        except Exception as exc:
            if is_missing(exc):
                return None
            raise
        try:
            return body.read()
        finally:
            body.close()

    def chunks(self, media_id: str, path: str, start: int, end: int) -> Iterator[bytes]:
        if end <= start:
            return
        body = self.client.get_object(Bucket=self.bucket, Key=self.key(media_id, path),
                                      Range=f"bytes={start}-{end - 1}")["Body"]
        try:
            while data := body.read(CHUNK):
                yield data
        finally:
            body.close()


# ------------------------------------------------------------------------------ scratch
class Scratch:
    """The worker's own working space (``data_dir/scratch`` of the host it runs on): a
    downloaded original, ffmpeg's output before it is published. Never shared, never served.

    Every attempt's folder records its owner (host and process). An attempt removes its folder
    when it ends, however it ends; a worker killed with SIGKILL cannot, so each claim first
    removes the folders of owners on this host that are gone (``sweep``), and any earlier
    folder of the media it claims.
    """

    OWNER = ".owner"

    def __init__(self, root: Path):
        self.root = Path(root)

    def attempt(self, media_id: str, attempt: int) -> Path:
        return self.root / f"{media_id}.{attempt}"

    def start(self, media_id: str, attempt: int) -> Path:
        """A fresh folder for this attempt, owned by this process."""
        folder = self.attempt(media_id, attempt)
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        (folder / self.OWNER).write_text(_owner_tag(os.getpid()), encoding="utf-8")
        return folder

    def clear(self, media_id: str) -> None:
        """Earlier attempts of this media that died before cleaning up after themselves."""
        for leftover in self.root.glob(f"{media_id}.*"):
            shutil.rmtree(leftover, ignore_errors=True)

    def remove(self, folder: Path) -> None:
        shutil.rmtree(folder, ignore_errors=True)

    def sweep(self) -> list[str]:
        """Remove the folders whose owner on this host is no longer running; their names."""
        removed: list[str] = []
        if not self.root.is_dir():
            return removed
        host = socket.gethostname()
        for folder in self.root.iterdir():
            try:
                owner = (folder / self.OWNER).read_text(encoding="utf-8").split()
            except OSError:
                continue  # not an attempt's folder (or just being created)
            if len(owner) < 2 or owner[0] != host:
                continue  # another host's (a shared volume): only its own workers may judge
            try:
                pid = int(owner[1])
            except ValueError:
                continue
            if _owner_tag(pid) != " ".join(owner):
                shutil.rmtree(folder, ignore_errors=True)
                removed.append(folder.name)
        return removed


def owner_tag() -> str:
    """This process's owner tag for a folder in scratch (see ``Scratch``)."""
    return _owner_tag(os.getpid())


def _owner_tag(pid: int) -> str:
    """``host pid start-time``: the start time tells a reused pid from the owner itself."""
    started = ""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        started = stat.rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        if pid != os.getpid():
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return f"{socket.gethostname()} {pid} gone"
            except PermissionError:
                pass
    return f"{socket.gethostname()} {pid} {started}".rstrip()
