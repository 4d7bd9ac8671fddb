"""The end of a run: what happened to every file, as a table and as an exit status.

The exit status is the contract for scripts and cron: 0 only when every file named on the
command line is on the server; 1 when any file did not make it (or, with ``--wait``, any media
did not become ready); 2 when the run could not start at all (bad endpoint, no files,
unusable state file); 130 after Ctrl-C.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tusflow_client.progress import display_name
from tusflow_client.transfer import FAILED, NOT_STARTED, RESUMED, SKIPPED, UPLOADED, FileResult
from tusflow_client.units import human_bytes, human_duration, human_rate

EXIT_OK, EXIT_FAILED, EXIT_UNUSABLE, EXIT_INTERRUPTED = 0, 1, 2, 130
ROWS = (UPLOADED, RESUMED, SKIPPED, FAILED, NOT_STARTED)


@dataclass
class Summary:
    results: list[FileResult]
    seconds: float
    problems: list[tuple[str, str]] = field(default_factory=list)  # PATH arguments that found nothing

    def rows(self) -> dict[str, dict[str, int]]:
        table = {status: {"files": 0, "size": 0, "sent": 0} for status in ROWS}
        for r in self.results:
            row = table[r.status]
            row["files"] += 1
            row["size"] += r.size
            row["sent"] += r.acked
        return table

    @property
    def sent(self) -> int:
        return sum(r.acked for r in self.results)

    @property
    def failures(self) -> list[tuple[str, str]]:
        out = [(arg, msg) for arg, msg in self.problems]
        out += [(r.path, r.error or r.status) for r in self.results if r.status in (FAILED, NOT_STARTED)]
        return out

    @property
    def ok(self) -> bool:
        return not self.failures and bool(self.results)

    def to_json(self) -> dict[str, Any]:
        rows = self.rows()
        return {
            **{status.replace(" ", "_"): rows[status]["files"] for status in ROWS},
            "files": len(self.results), "bytes": self.sent, "seconds": round(self.seconds, 3),
            "problems": [{"path": p, "error": e} for p, e in self.problems],
            "ok": self.ok,
        }

    def render(self) -> str:
        rows = self.rows()
        lines = ["", "summary"]
        lines.append(f"  {'':<12}{'files':>6}  {'size':>10}  {'sent':>10}")
        for status in ROWS:
            row = rows[status]
            if status == NOT_STARTED and not row["files"]:
                continue
            lines.append(f"  {status:<12}{row['files']:>6}  {human_bytes(row['size']):>10}  "
                         f"{human_bytes(row['sent']):>10}")
        if self.problems:
            lines.append(f"  {'bad paths':<12}{len(self.problems):>6}")
        total_size = sum(r.size for r in self.results)
        lines.append(f"  {'total':<12}{len(self.results):>6}  {human_bytes(total_size):>10}  "
                     f"{human_bytes(self.sent):>10}")
        speed = human_rate(self.sent / self.seconds) if self.seconds > 0 else "--"
        lines.append(f"  time {human_duration(self.seconds)} ({self.seconds:.1f}s), {speed}")
        failures = self.failures
        if failures:
            lines.append("")
            lines.append(f"{len(failures)} not uploaded:")
            lines.extend(f"  {display_name(path)}: {message}" for path, message in failures)
        return "\n".join(lines)


def exit_status(summary: Summary, media_ok: bool = True, interrupted: bool = False) -> int:
    if interrupted:
        return EXIT_INTERRUPTED
    return EXIT_OK if summary.ok and media_ok else EXIT_FAILED
