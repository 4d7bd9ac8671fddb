"""Files the tests compare or leave behind: sha256 of a file, the artifacts folder."""

from __future__ import annotations

import hashlib
from pathlib import Path

# Screenshots and other things a person may want to look at after a run.
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
