"""Turn the PATH arguments into the files to upload.

Rules, chosen so that pointing the command at a semester's folder does the obvious thing:

- a file named on the command line is always taken, whatever its extension: the user asked
  for it by name;
- directories are walked recursively and globs are expanded (``**`` included), and from those
  only files with an accepted extension are taken, so thumbnails, subtitles and notes that live
  next to the recordings are left alone;
- hidden entries (``.name``) are skipped while walking: they are editor, OS and sync-tool
  leftovers such as macOS ``._clip.mp4`` resource forks, which look like videos but are not;
- each file is taken once, however many arguments reach it, in a stable (sorted) order so that
  reruns go through the files in the same order.

A PATH that matches nothing is reported as a problem instead of being silently ignored: a typo
in an overnight job must not look like success.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

DEFAULT_EXTENSIONS: tuple[str, ...] = (
    "mp4", "mov", "mkv", "webm", "avi", "m4v", "mpg", "mpeg", "ts", "flv", "wmv", "3gp", "ogv",
)

_GLOB_CHARS = frozenset("*?[")


def parse_extensions(value: str | None) -> frozenset[str]:
    """``"mp4, .MOV"`` → ``{"mp4", "mov"}``; None or empty gives the video defaults."""
    if not value:
        return frozenset(DEFAULT_EXTENSIONS)
    exts = {part.strip().lstrip(".").lower() for part in value.split(",")}
    exts.discard("")
    return frozenset(exts) or frozenset(DEFAULT_EXTENSIONS)


@dataclass
class Discovery:
    files: list[Path] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)  # (argument, message)


def discover(arguments: Iterable[str], extensions: frozenset[str]) -> Discovery:
    result = Discovery()
    seen: set[Path] = set()

    def take(path: Path) -> None:
        resolved = path.resolve()
        if resolved not in seen:
            seen.add(resolved)
            result.files.append(resolved)

    for argument in arguments:
        path = Path(argument).expanduser()
        if path.is_dir():
            found = list(_walk(path, extensions))
            if not found:
                result.problems.append((argument, f"no files with extension {_ext_list(extensions)} in directory"))
            for item in found:
                take(item)
        elif path.exists() or path.is_symlink():
            if path.is_file():
                take(path)
            else:
                result.problems.append((argument, "not a regular file"))
        elif _GLOB_CHARS & set(argument):
            matches = sorted(glob.glob(os.path.expanduser(argument), recursive=True))
            found = []
            for match in matches:
                m = Path(match)
                if m.is_dir():
                    found.extend(_walk(m, extensions))
                elif m.is_file() and _accepted(m, extensions):
                    found.append(m)
            if not found:
                result.problems.append((argument, "pattern matched no files"))
            for item in found:
                take(item)
        else:
            result.problems.append((argument, "no such file or directory"))
    return result


def _walk(root: Path, extensions: frozenset[str]) -> Iterator[Path]:
    """Symlinked directories are not followed, so a link back up the tree cannot loop."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if not name.startswith(".") and _accepted(path, extensions) and path.is_file():
                yield path


def _accepted(path: Path, extensions: frozenset[str]) -> bool:
    return path.suffix.lstrip(".").lower() in extensions


def _ext_list(extensions: frozenset[str]) -> str:
    return ",".join(sorted(extensions))
