"""Which Redis the queue lives on, and how to reach it.

``[redis] url`` wins; when it is empty every tusflow process (server, workers, ``tusflow jobs``)
agrees on the private socket ``<data_dir>/redis.sock`` that ``tusflow up`` starts a
redis-server on, so a single-machine install needs no Redis configuration at all.
"""

from __future__ import annotations

from pathlib import Path

from redis import Redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from models.config import Settings

SOCKET_NAME = "redis.sock"
# sockaddr_un.sun_path is 108 bytes on Linux, including the terminating NUL.
MAX_SOCKET_PATH = 107


def private_socket(settings: Settings) -> Path:
    """Where ``tusflow up`` puts its private redis-server's socket."""
    return Path(settings.data_dir) / SOCKET_NAME


def uses_private_redis(settings: Settings) -> bool:
    return not settings.redis.url.strip()


def redis_url(settings: Settings) -> str:
    """The URL to show people and to hand to other tools (``rq info --url``)."""
    if uses_private_redis(settings):
        return f"unix://{private_socket(settings)}"
    return settings.redis.url.strip()


def connect(settings: Settings, *, timeout: float = 5.0, retries: int = 2) -> Redis:
    """A client for the queue's Redis.

    Timeouts are short and retries few because the completion path calls this while a client
    waits for its final PATCH: when Redis is down we want to fail within a second or two and
    leave the job to the reconciler, not hang the upload. The RQ worker raises the socket
    timeout itself for its blocking pops.
    """
    retry = Retry(ExponentialBackoff(cap=0.5, base=0.05), retries)
    if uses_private_redis(settings):
        path = str(private_socket(settings))
        if len(path.encode()) > MAX_SOCKET_PATH:
            raise ValueError(f"unix socket path too long for the OS ({len(path)} bytes): {path}; "
                             "use a shorter [storage] data_dir or set [redis] url")
        return Redis(unix_socket_path=path, socket_timeout=timeout, socket_connect_timeout=timeout,
                     retry=retry)
    return Redis.from_url(settings.redis.url.strip(), socket_timeout=timeout,
                          socket_connect_timeout=timeout, retry=retry)
