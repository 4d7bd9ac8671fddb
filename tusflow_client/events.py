"""What happens during a run, as plain values.

Transfers and the runner only emit events; how they look (bars, lines, JSON) is the
renderer's business, so ``--json`` and the terminal can never disagree about what happened.
Kinds, in the order a run produces them:

- ``discovered``  files found (``files``, ``bytes``) and ``problems`` with the PATH arguments;
- ``server``      what the endpoint advertised;
- ``start``       a file begins: ``size``, ``offset`` (server offset, > 0 when resuming), ``url``;
- ``progress``    after every chunk the server acknowledged: ``offset``, ``sent``;
- ``retry``       a request failed and will be retried after ``delay`` seconds;
- ``done``        a file made it: ``status`` is uploaded, resumed or skipped;
- ``failed``      a file did not make it: ``error`` says why;
- ``summary``     the totals at the end;
- ``media``       (``--wait``) a media item changed state;
- ``warning``, ``error``  a message about the run as a whole.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable


@dataclass(frozen=True)
class Event:
    kind: str
    file: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    ts: float = field(default_factory=time.time)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"event": self.kind, "ts": round(self.ts, 3)}
        if self.file is not None:
            out["file"] = self.file
        out.update(self.data)
        return out


Emit = Callable[[Event], None]
