"""One way to build an S3 client from ``[storage.s3]``, shared by every store that talks to S3.

The upload store (``tus_server.tus.s3store``) and the media store (``models.mediastore``) reach
the same bucket with the same credentials and options; building the client in one place keeps
them from drifting apart (a retry policy or a checksum setting fixed in one but not the other).
It lives in the core because the worker, which never imports the web layer, needs it too.
"""

from __future__ import annotations

import os
from typing import Any

from models.config import S3Config

_MISSING = {"NoSuchKey", "404", "NotFound", "NoSuchUpload"}


def make_client(cfg: S3Config, pool: int) -> Any:
    """A botocore S3 client for ``cfg`` with ``pool`` connections; empty credentials and region
    come from the standard AWS environment (AWS_ACCESS_KEY_ID, AWS_PROFILE, AWS_REGION, ...)."""
    import boto3  # botocore loads only when S3 is used
    from botocore.config import Config

    region = cfg.region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    config = Config(
        # botocore signs the payload on plain http whatever it is told, unless told here.
        s3={"payload_signing_enabled": cfg.sign_payload,
            **({"addressing_style": "path"} if cfg.endpoint_url else {})},
        max_pool_connections=pool,
        retries={"mode": "standard", "max_attempts": 4},
        connect_timeout=10, read_timeout=120,
        # SigV4 already hashes the payload on plain HTTP, and TLS protects it otherwise: a
        # second CRC over every part would only cost CPU.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    return boto3.session.Session().client(
        "s3", endpoint_url=cfg.endpoint_url or None, region_name=region,
        aws_access_key_id=cfg.access_key_id or None, aws_secret_access_key=cfg.secret_access_key or None,
        config=config)


def error_code(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", ""))
    return ""


def is_missing(exc: BaseException) -> bool:
    """The key, or the multipart upload, does not exist (servers spell it differently)."""
    return error_code(exc) in _MISSING
