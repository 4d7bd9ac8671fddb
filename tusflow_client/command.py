"""``tusflow upload``: bulk, resumable uploads of recordings to a tus endpoint (tuspy-based).

Argument parsing only; the work is in ``tusflow_client`` (imported when the command runs,
so other subcommands do not pay for requests and tuspy at start-up).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, Callable


def _positive_int(text: str) -> int:
    value = _size(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be greater than 0")
    return value


def _at_least_zero(convert: type, what: str) -> Callable[[str], Any]:
    """An argparse type: ``convert`` the text, refusing what is not a number or is below 0."""
    def parse(text: str) -> Any:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not {what}: {text!r}") from None
        if value < 0:
            raise argparse.ArgumentTypeError("must be 0 or more")
        return value
    return parse


_non_negative_int = _at_least_zero(int, "a whole number")
_seconds = _at_least_zero(float, "a number of seconds")


def _size(text: str) -> int:
    """Bytes, with optional K/M/G suffix (powers of 1024): 65536, 64K, 8M."""
    units = {"k": 1024, "m": 1024**2, "g": 1024**3}
    raw = text.strip().lower().removesuffix("b").removesuffix("i")
    factor = units.get(raw[-1:], 1)
    number = raw[:-1] if raw[-1:] in units else raw
    try:
        return int(float(number) * factor)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size in bytes: {text!r}") from None


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "upload", help="upload video files to a tus endpoint, resumably",
        description="Upload files, directories (recursively) and globs to a tus 1.0 endpoint. "
                    "Running the same command again resumes unfinished files and skips finished ones.",
        epilog="Exit status: 0 every file made it; 1 some file did not (or, with --wait, some media did "
               "not become ready); 2 nothing could be done (endpoint, files or state file); 130 interrupted.")
    p.add_argument("paths", nargs="+", metavar="PATH", help="files, directories or glob patterns")
    p.add_argument("--endpoint", required=True, metavar="URL",
                   help="the tus upload collection, e.g. https://host/files/")
    p.add_argument("--jobs", "-j", type=_positive_int, default=2, metavar="N", help="files in parallel (default 2)")
    p.add_argument("--chunk-size", type=_positive_int, default=8 * 1024**2, metavar="BYTES",
                   help="bytes per PATCH request, suffixes K/M/G allowed (default 8M)")
    p.add_argument("--ext", metavar="LIST",
                   help="extensions taken from directories and globs, comma-separated "
                        "(default: mp4,mov,mkv,webm,avi,m4v,mpg,mpeg,ts,flv,wmv,3gp,ogv)")
    p.add_argument("--title", metavar="T",
                   help="title metadata; may use {stem}, {name}, {parent} (default: from the file name)")
    p.add_argument("--state-file", type=Path, metavar="PATH",
                   help="where upload URLs are kept between runs "
                        "(default $XDG_STATE_HOME/tusflow/upload-state.json)")
    p.add_argument("--json", action="store_true", help="print one JSON object per event on stdout")
    p.add_argument("--wait", action="store_true", help="after uploading, follow the media until ready or failed")
    p.add_argument("--wait-timeout", type=_seconds, metavar="SECONDS",
                   help="with --wait, stop waiting after this long (default: no limit)")
    p.add_argument("--wait-interval", type=_seconds, default=2.0, help=argparse.SUPPRESS)
    p.add_argument("--token", default=os.environ.get("TUSFLOW_TOKEN") or None, metavar="T",
                   help="bearer token sent on every request (default $TUSFLOW_TOKEN)")
    p.add_argument("--retries", type=_non_negative_int, default=10, metavar="N",
                   help="retries per file without progress before it is given up; with the default "
                        "backoff 10 rides out an outage of about 3-6 minutes (default 10)")
    p.add_argument("--retry-delay", type=_seconds, default=1.0, metavar="SECONDS",
                   help="first backoff delay, doubled per failure (default 1)")
    p.add_argument("--retry-max-delay", type=_seconds, default=60.0, metavar="SECONDS",
                   help="longest single backoff delay (default 60)")
    p.add_argument("--timeout", type=_seconds, default=60.0, metavar="SECONDS",
                   help="give up on a request when the server is silent this long (default 60)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tusflow_client.discovery import parse_extensions
    from tusflow_client.net import Timeouts
    from tusflow_client.retry import RetryPolicy
    from tusflow_client.runner import Run, RunOptions
    from tusflow_client.state import default_state_path
    from tusflow_client.transfer import TransferOptions

    endpoint = args.endpoint
    if not endpoint.startswith(("http://", "https://")):
        print(f"tusflow upload: --endpoint must be an http:// or https:// URL, not {args.endpoint!r}",
              file=sys.stderr)
        return 2
    transfer = TransferOptions(
        chunk_size=args.chunk_size,
        retry=RetryPolicy(retries=args.retries, base_delay=args.retry_delay,
                          max_delay=max(args.retry_delay, args.retry_max_delay)),
        timeouts=Timeouts(connect=min(10.0, args.timeout or 10.0), read=args.timeout or 60.0),
        title=args.title, token=args.token)
    options = RunOptions(
        paths=tuple(args.paths), endpoint=endpoint,
        state_file=(args.state_file or default_state_path()).expanduser(),
        extensions=parse_extensions(args.ext), jobs=args.jobs,
        output="json" if args.json else "auto", wait=args.wait,
        wait_timeout=args.wait_timeout or None, wait_interval=args.wait_interval, transfer=transfer)
    return Run(options).execute()
