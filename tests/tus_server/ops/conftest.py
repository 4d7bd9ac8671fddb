"""Fixtures for the operations tests: a webhook receiver the tests run
(tests.support.webhooks), real RQ workers, settings that send webhooks to the receiver."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from models.config import Settings, load_settings
from tests.support.procs import TUSFLOW, VENV_BIN, Proc, RedisServer
from tests.support.webhooks import SECRET, Receiver


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
        # A stock worker names its own config as a deployment would (jobs carry ids only).
        self.proc = Proc(argv, env={"TUSFLOW_CONFIG_FILE": str(settings.config_path)}, cwd=cwd,
                         name="worker")
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
