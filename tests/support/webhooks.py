"""A webhook receiver the tests run: a platform endpoint on 127.0.0.1 that checks the
signature the way the documentation tells receivers to, answers planned statuses and applies
each delivery once."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

SECRET = "test-webhook-secret"


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    at: float
    status: int
    signature_ok: bool

    @property
    def json(self) -> dict[str, Any]:
        return json.loads(self.body)

    @property
    def delivery(self) -> str:
        return self.headers.get("tusflow-delivery", "")


def check_signature(secret: str, header: str, body: bytes, tolerance: float = 300.0) -> bool:
    """The receiver's check, written from the documented header format, not from our code."""
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    if "t" not in parts or "v1" not in parts or abs(time.time() - int(parts["t"])) > tolerance:
        return False
    expected = hmac.new(secret.encode(), parts["t"].encode() + b"." + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, parts["v1"])


@dataclass
class Receiver:
    """A platform endpoint on 127.0.0.1 (free port). It answers the statuses in ``plan`` in
    order, then ``default``; on a 2xx for a valid signature it applies the delivery's side
    effect once per delivery id, the way a receiver that dedupes would."""

    secret: str = SECRET
    plan: list[int] = field(default_factory=list)
    default: int = 200
    requests: list[Received] = field(default_factory=list)
    applied: dict[str, dict[str, Any]] = field(default_factory=dict)  # id -> the body applied
    acked: dict[str, int] = field(default_factory=dict)  # id -> 2xx answers given
    _cond: threading.Condition = field(default_factory=threading.Condition)

    def start(self) -> "Receiver":
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                receiver._handle(self, body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks/tusflow"

    def _handle(self, handler: BaseHTTPRequestHandler, body: bytes) -> None:
        headers = {k.lower(): v for k, v in handler.headers.items()}
        ok = check_signature(self.secret, headers.get("tusflow-signature", ""), body)
        with self._cond:
            status = self.plan.pop(0) if self.plan else self.default
            if not ok:
                status = 400
            delivery = headers.get("tusflow-delivery", "")
            if 200 <= status < 300:
                self.acked[delivery] = self.acked.get(delivery, 0) + 1
                if delivery not in self.applied:  # dedupe on the delivery id
                    self.applied[delivery] = json.loads(body)
            self.requests.append(Received(headers, body, time.monotonic(), status, ok))
            self._cond.notify_all()
        handler.send_response(status)
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    def wait_for(self, predicate: Callable[[list[Received]], bool], timeout: float = 30.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(self.requests):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"receiver: condition not met; got {[(r.status, r.delivery) for r in self.requests]}")
                self._cond.wait(min(left, 0.2))
            return list(self.requests)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)
