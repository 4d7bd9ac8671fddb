"""A finished upload's bytes streamed from a store that has no local file (S3), with the one
byte range a player or a resuming download asks for.

A local file goes out as Starlette's ``FileResponse``, which answers Range itself. Streamed
content gets the same single-range behaviour here: ``206`` with ``Content-Range`` for one
satisfiable range, read from the store by range (``Content.read_range``: one ranged GET, no
byte before the range passes through), ``416`` with ``Content-Range: bytes */size`` for a range
wholly past the end, and the whole body for anything else (several ranges, another unit, a
malformed header: RFC 9110 lets a server ignore those). The range syntax is delivery's
``parse_range``, so uploads and HLS files read ranges the same way.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from tus_server.delivery import parse_range
from tus_server.tus.datastore import Content


def streamed_download(request: Request, content: Content, media_type: str,
                      headers: dict[str, str]) -> Response:
    """The response for a GET (or HEAD) of streamed ``content``."""
    assert content.chunks is not None
    size = content.size
    headers = {**headers, "Accept-Ranges": "bytes"} if content.read_range is not None else dict(headers)
    wanted = request.headers.get("range")
    if wanted and content.read_range is not None and not request.headers.get("if-range"):
        try:
            byte_range = parse_range(wanted, size)
        except ValueError:
            return Response(status_code=416, headers={**headers, "Content-Range": f"bytes */{size}"})
        if byte_range is not None:
            start, end = byte_range
            headers.update({"Content-Range": f"bytes {start}-{end - 1}/{size}",
                            "Content-Length": str(end - start)})
            if request.method == "HEAD":
                return Response(status_code=206, media_type=media_type, headers=headers)
            return StreamingResponse(content.read_range(start, end), status_code=206,
                                     media_type=media_type, headers=headers)
    headers["Content-Length"] = str(size)
    if request.method == "HEAD":
        return Response(media_type=media_type, headers=headers)
    return StreamingResponse(content.chunks(), media_type=media_type, headers=headers)
