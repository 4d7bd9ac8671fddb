"""JSON error answers: a status and one line a person can read."""

from __future__ import annotations

from starlette.responses import JSONResponse


def json_error(status: int, reason: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """One shape for every 4xx/5xx of the API, so the pages can show ``error`` as is."""
    return JSONResponse({"error": reason.splitlines()[0] if reason else ""}, status_code=status,
                        headers={"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff",
                                 **(headers or {})})
