"""Fixtures for the operations tests: a webhook receiver the tests run, real RQ workers, and
a scraper that reads /metrics the way Prometheus does."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from models.config import Settings, load_settings
from tests.support.procs import TUSFLOW, VENV_BIN, Proc, RedisServer

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


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver().start()
    yield r
    r.stop()


class RqWorker:
    """A real worker process with RQ's scheduler (which moves delayed retries back onto the
    queue): stock ``rq worker`` on the webhooks queue alone, so delivery is tested apart from
    tusflow's own worker, or ``tusflow worker`` as deployed."""

    def __init__(self, settings: Settings, cwd: Path, tusflow: bool = False):
        from transcoder.webhooks import queue_name
        if tusflow:
            argv = [TUSFLOW, "worker", "--config", str(settings.config_path)]
            ready = r"event=worker\.start"
        else:
            argv = [str(VENV_BIN / "rq"), "worker", "--url", settings.redis.url, "--with-scheduler",
                    "--worker-ttl", "30", queue_name(settings)]
            ready = r"Listening on|Worker .* started"
        self.proc = Proc(argv, cwd=cwd, name="worker")
        self.proc.wait_for(ready, timeout=30)

    def stop(self) -> None:
        self.proc.stop()


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[Callable[..., RqWorker]]:
    workers: list[RqWorker] = []

    def _start(settings: Settings, tusflow: bool = False) -> RqWorker:
        worker = RqWorker(settings, tmp_path, tusflow)
        workers.append(worker)
        return worker

    yield _start
    for worker in workers:
        worker.stop()


@pytest.fixture
def webhook_settings(make_config: Callable[..., Path], redis_server: RedisServer,
                     receiver: Receiver) -> Callable[..., Settings]:
    """Settings (and the config file behind them) that send webhooks to ``receiver``."""
    def _make(**webhooks: Any) -> Settings:
        values = {"urls": [receiver.url], "secret": SECRET, "timeout": 5.0, "retry_base": 1.0,
                  "retry_max": 2.0, "max_age": 600, **webhooks}
        path = make_config(redis={"url": redis_server.url}, webhooks=values)
        return load_settings(path, env={})
    return _make


def scrape(origin: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """/metrics as {(sample name, sorted labels): value}."""
    r = httpx.get(f"{origin}/metrics", timeout=10)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    out = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def wait_until(predicate: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached within {timeout} s")
        time.sleep(0.1)
