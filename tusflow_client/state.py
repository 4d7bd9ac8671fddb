"""The state file: where each file's upload URL is kept between runs.

It implements tuspy's ``tusclient.storage.interface.Storage`` so that tuspy's own resume path
(look the key up, HEAD the stored URL, continue from the server's offset) is the one used.
tuspy ships ``FileStorage`` on TinyDB, which we do not use because:

- TinyDB is not thread-safe, and ``--jobs`` runs several uploaders at once;
- it rewrites its JSON file in place, so a SIGKILL or power cut mid-write can leave a torn
  file and lose every stored URL. Here every change is written to a temporary file, fsynced
  and renamed over the old one, so the file on disk is always a complete version.

Keys are ``path|size|mtime_ns`` (``state_key``), not tuspy's content fingerprint: hashing the
head of thousands of large files is slow, and a file edited in place (same size, new bytes)
must not resume into the old upload. A file whose size or mtime changed gets a new key and is
uploaded anew; the stale entry for the same path is dropped at that moment.

Entries are kept per endpoint, because an upload URL only means something to the server that
issued it. A lock file (``flock``) keeps two runs from sharing one state file; the kernel
releases it if the process dies, so a SIGKILL never leaves it stuck.
"""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from tusclient.storage.interface import Storage

STATE_VERSION = 1


class StateError(RuntimeError):
    """The state file cannot be used; the message says why and what to do."""


def default_state_path() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(base) / "tusflow" / "upload-state.json"


def state_key(path: Path, size: int, mtime_ns: int) -> str:
    return f"{path}|{size}|{mtime_ns}"


def _path_of(key: str) -> str:
    return key.rsplit("|", 2)[0]


class StateFile(Storage):
    """URL storage for one endpoint, plus a ``done`` mark (and media link) per key so that a
    rerun can tell finished files from unfinished ones."""

    def __init__(self, path: Path, endpoint: str):
        self.path = path
        self.endpoint = endpoint
        self.warnings: list[str] = []
        self._lock = threading.Lock()
        self._lock_fd: int | None = None
        self._data: dict[str, Any] = {"version": STATE_VERSION, "endpoints": {}}

    # ------------------------------------------------------------------ lifecycle
    def open(self) -> "StateFile":
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(str(self.path) + ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise StateError(f"cannot use state file {self.path}: {exc.strerror or exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StateError(f"state file {self.path} is in use by another `tusflow upload`; "
                             "wait for it to finish or pass a different --state-file") from None
        self._lock_fd = fd
        self._data = self._read()
        return self

    def close(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

    def __enter__(self) -> "StateFile":
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _read(self) -> dict[str, Any]:
        try:
            raw = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {"version": STATE_VERSION, "endpoints": {}}
        except OSError as exc:
            raise StateError(f"cannot read state file {self.path}: {exc.strerror or exc}") from None
        try:
            data = json.loads(raw)
            if not isinstance(data, dict) or not isinstance(data.get("endpoints"), dict):
                raise ValueError("unexpected layout")
            return data
        except ValueError:
            # Writes are atomic, so this is someone else's file or a hand edit gone wrong. Keep
            # it for inspection rather than refusing to run: the worst case is re-uploading.
            aside = self.path.with_name(f"{self.path.name}.corrupt-{int(time.time())}")
            os.replace(self.path, aside)
            self.warnings.append(f"state file {self.path} was not valid; moved it to {aside} and started afresh")
            return {"version": STATE_VERSION, "endpoints": {}}

    def _write(self) -> None:
        """Write-temp, fsync, rename: the file is always either the old or the new version."""
        directory = self.path.parent
        fd, tmp = tempfile.mkstemp(prefix=self.path.name + ".", suffix=".tmp", dir=directory)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(self._data, f, indent=1, sort_keys=True)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        try:
            dir_fd = os.open(directory, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError:
            pass

    def _entries(self) -> dict[str, dict[str, Any]]:
        return self._data["endpoints"].setdefault(self.endpoint, {})

    # ------------------------------------------------------------------ tuspy Storage
    def get_item(self, key: str) -> str | None:
        with self._lock:
            entry = self._entries().get(key)
            return entry.get("url") if entry else None

    def set_item(self, key: str, value: str | None) -> None:
        # tuspy calls set_item(key, None) when nothing was stored; that is not a change.
        if value is None:
            return
        with self._lock:
            entries = self._entries()
            entry = entries.get(key)
            if entry is not None and entry.get("url") == value:
                return
            path = _path_of(key)
            for other in [k for k in entries if k != key and _path_of(k) == path]:
                del entries[other]  # the file changed since; its old upload is no longer ours
            entries[key] = {"url": value, "done": False, "media": None, "updated": int(time.time())}
            self._write()

    def remove_item(self, key: str) -> None:
        with self._lock:
            if self._entries().pop(key, None) is not None:
                self._write()

    # ------------------------------------------------------------------ our additions
    def is_done(self, key: str) -> bool:
        with self._lock:
            entry = self._entries().get(key)
            return bool(entry and entry.get("done"))

    def media_of(self, key: str) -> str | None:
        with self._lock:
            entry = self._entries().get(key)
            return entry.get("media") if entry else None

    def mark_done(self, key: str, media: str | None) -> None:
        with self._lock:
            entry = self._entries().get(key)
            if entry is None:
                return
            entry.update(done=True, media=media or entry.get("media"), updated=int(time.time()))
            self._write()
