"""The tusflow RQ worker: a stock ``rq.Worker`` with four tusflow habits.

- between jobs (every ``[worker] reconcile_interval`` seconds, also while idle) it runs the
  reconciler, so intents that missed Redis get enqueued and dead workers' jobs come back;
- it runs RQ's scheduler, which moves retries waiting for their backoff back to the queue;
- its work horse dies with it (``PR_SET_PDEATHSIG``), so a SIGKILLed worker cannot leave an
  orphan ffmpeg publishing behind the reconciler's back;
- on SIGTERM/SIGINT it asks the running job to stop ffmpeg and requeue itself at the front
  (no try used), then exits; a second signal is RQ's cold shutdown.

It also serves the webhooks queue, behind transcoding in no way: RQ takes from the first
non-empty queue, and webhooks are listed first. ``tusflow worker`` (tus_server/commands/worker.py)
only parses its arguments and calls ``run``.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import sys
import time
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from rq import Worker
from rq.utils import now

from models.config import CONFIG_ENV, Settings
from models.db import init_db, make_engine
from models.layout import Layout
from models.logs import event
from models.procs import die_with_parent
from models.redis_conn import connect, redis_url
from transcoder import webhooks
from transcoder.reconcile import reconcile

log = logging.getLogger("tusflow.worker")

# Busy workers heartbeat this often; the reconciler calls a worker dead after missed beats.
JOB_MONITORING_INTERVAL = 5
REDIS_WAIT_BURST_S = 10.0
# RQ's registry cleaning (expired entries, dead workers' keys) does not need to run as often
# as our reconciler; RQ's default is 10 minutes.
RQ_MAINTENANCE_S = 60.0


def extra_queues(settings: Settings) -> list[str]:
    """Queues served besides transcoding: webhook deliveries."""
    return [webhooks.queue_name(settings)]


class TranscodeWorker(Worker):
    """rq.Worker plus reconciling, horse-dies-with-worker and requeue-on-shutdown."""

    def __init__(self, *args: Any, settings: Settings, burst: bool = False, **kwargs: Any):
        self.tusflow_settings = settings  # before RQ's __init__, which reads dequeue_timeout
        self.burst = burst
        self.tusflow_engine = make_engine(settings)
        self.stop_signalled = False
        self._rq_cleaned_at: float | None = None
        super().__init__(*args, **kwargs)

    @property
    def dequeue_timeout(self) -> int:
        # Wake up from the blocking pop often enough to reconcile while idle.
        return max(1, math.ceil(self.tusflow_settings.worker.reconcile_interval))

    def run_maintenance_tasks(self) -> None:
        """Reconcile every pass; RQ's own registry cleaning only every RQ_MAINTENANCE_S."""
        if self.stop_signalled:
            return  # leaving: RQ's maintenance would even restart the scheduler it just stopped
        try:
            reconcile(self.tusflow_settings, self.tusflow_engine, self.connection,
                      queues=self.queue_names(),
                      min_spacing=self.tusflow_settings.worker.reconcile_interval / 2)
        except RedisError as exc:
            event(log, "reconcile.skipped", None, level=logging.WARNING, error=str(exc))
        except Exception:
            log.exception("event=reconcile.error")
        try:
            due = self._rq_cleaned_at is None or \
                time.monotonic() - self._rq_cleaned_at >= RQ_MAINTENANCE_S
            if due:
                super().run_maintenance_tasks()
                self._rq_cleaned_at = time.monotonic()
            else:
                self.last_cleaned_at = now()
                scheduler = self.scheduler
                if not self.burst and scheduler is not None and \
                        (not scheduler._process or not scheduler._process.is_alive()):
                    # What RQ's maintenance does, without waiting for it: take over the
                    # scheduler lock a dead worker held, so due retries move on.
                    scheduler.acquire_locks(auto_start=True)
        except RedisError as exc:
            self.last_cleaned_at = now()
            event(log, "maintenance.skipped", None, level=logging.WARNING, error=str(exc))
        try:
            if self.tusflow_settings.webhooks.urls:
                webhooks.sweep(self.tusflow_settings, self.tusflow_engine)
        except Exception as exc:
            event(log, "webhooks.sweep_failed", None, level=logging.WARNING, error=str(exc))

    def setup_work_horse_signals(self) -> None:
        super().setup_work_horse_signals()
        # Until the job installs its own handler (which stops ffmpeg and requeues), a SIGTERM
        # must not kill the horse: that would count as a failed try.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)

    def main_work_horse(self, job: Any, queue: Any) -> None:
        self.tusflow_engine.dispose(close=False)  # the parent's pooled connections stay its own
        die_with_parent(signal.SIGKILL, parent=self.pid)  # exits if the worker is gone already
        super().main_work_horse(job, queue)

    def request_stop(self, signum: int, frame: Any) -> None:
        self.stop_signalled = True
        super().request_stop(signum, frame)

    def handle_warm_shutdown_request(self) -> None:
        super().handle_warm_shutdown_request()
        if self.horse_pid:
            try:
                os.kill(self.horse_pid, signal.SIGTERM)  # the job requeues itself and returns
            except ProcessLookupError:
                pass

    def teardown(self) -> None:
        try:
            super().teardown()
        finally:
            self.tusflow_engine.dispose()


def _wait_for_redis(settings: Settings, deadline: float | None) -> bool:
    delay = 0.5
    while True:
        conn = connect(settings)
        try:
            conn.ping()
            return True
        except RedisError as exc:
            if deadline is not None and time.monotonic() > deadline:
                print(f"tusflow worker: Redis at {redis_url(settings)} unreachable: {exc}",
                      file=sys.stderr)
                return False
            event(log, "worker.waiting_for_redis", None, url=redis_url(settings), error=str(exc))
            time.sleep(delay)
            delay = min(delay * 2, 10.0)
        finally:
            conn.close()


def run(settings: Settings, burst: bool = False, name: str | None = None) -> int:
    """Serve the queues until a signal (or, with ``burst``, until they are empty); the exit
    code. RQ gives up its loop on some Redis errors: a new worker starts once Redis is back."""
    Layout(settings.data_dir).ensure()
    engine = make_engine(settings)
    try:
        init_db(engine)
    finally:
        engine.dispose()
    queues = extra_queues(settings) + [settings.redis.queue]
    # Jobs carry ids only; the work horses (forked from here) load these same Settings again:
    # this process's config file, named in the environment they inherit, plus its overrides.
    if settings.config_path is not None:
        os.environ[CONFIG_ENV] = str(settings.config_path)
    else:
        os.environ.pop(CONFIG_ENV, None)
    stop = {"requested": False}

    def early_stop(signum: int, frame: Any) -> None:
        stop["requested"] = True
        raise SystemExit(0)

    # Until RQ installs its own handlers (inside work()), a signal just ends the command.
    signal.signal(signal.SIGTERM, early_stop)
    signal.signal(signal.SIGINT, early_stop)
    try:
        if not _wait_for_redis(settings, time.monotonic() + REDIS_WAIT_BURST_S if burst else None):
            return 1
        while True:
            worker = TranscodeWorker(queues, connection=connect(settings, timeout=30.0),
                                     name=name, settings=settings, burst=burst,
                                     maintenance_interval=max(1, math.ceil(settings.worker.reconcile_interval)),
                                     job_monitoring_interval=JOB_MONITORING_INTERVAL)
            event(log, "worker.start", None, worker=worker.name, queues=",".join(queues),
                  redis=redis_url(settings), burst=burst)
            try:
                worker.work(burst=burst, with_scheduler=True, logging_level="INFO")
            except RedisConnectionError as exc:
                event(log, "worker.redis_lost", None, level=logging.WARNING, error=str(exc))
            signal.signal(signal.SIGTERM, early_stop)
            signal.signal(signal.SIGINT, early_stop)
            if burst or worker.stop_signalled or stop["requested"]:
                event(log, "worker.stop", None, worker=worker.name)
                return 0
            # RQ's loop gives up on some Redis errors; keep serving once Redis is back.
            event(log, "worker.restart", None, level=logging.WARNING, worker=worker.name)
            time.sleep(1.0)
            _wait_for_redis(settings, None)
    except SystemExit:
        return 0 if stop["requested"] else 1
