"""docker/ checked against the code, without a Docker engine: the commands the files run, the
settings they pass, the paths and ports they share, the health probe, and what the image's
``pip install`` would contain."""

from __future__ import annotations

import configparser
import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any, Callable, Mapping
from urllib.parse import urlsplit

import pytest
import yaml

from models.config import load_settings
from tests.support.procs import REPO, TUSFLOW, RedisServer, TusflowServer
from tus_server.cli import build_parser

DOCKER = REPO / "docker"
CONFIG_IN_IMAGE = "/etc/tusflow/config.toml"


# ---------------------------------------------------------------------------- parsing helpers
def interpolate(value: str, env: Mapping[str, str]) -> str:
    """Compose's ``${VAR}``, ``${VAR:-default}``, ``${VAR-default}`` and ``$$``."""
    def repl(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name, op, default = m.group(1), m.group(2), m.group(3) or ""
        if op == ":-":
            return env.get(name) or default
        if op == "-":
            return env.get(name, default)
        return env.get(name, "")
    return re.sub(r"\$\$|\$\{(\w+)(?:(:-|-)([^}]*))?\}", repl, value)


def interpolated(node: Any, env: Mapping[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, list):
        return [interpolated(v, env) for v in node]
    if isinstance(node, dict):
        return {k: interpolated(v, env) for k, v in node.items()}
    return node


def compose(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    return interpolated(yaml.safe_load((DOCKER / "compose.yaml").read_text()), env or {})


def dockerfile_stages() -> list[list[tuple[str, str]]]:
    """Instructions per stage, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", (DOCKER / "Dockerfile").read_text())
    stages: list[list[tuple[str, str]]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, args = line.partition(" ")
        if instruction.upper() == "FROM":
            stages.append([])
        stages[-1].append((instruction.upper(), args.strip()))
    return stages


def final_stage() -> list[tuple[str, str]]:
    return dockerfile_stages()[-1]


def instruction(name: str) -> list[str]:
    return [args for ins, args in final_stage() if ins == name]


def exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), args
    return value


def supervisor() -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(inline_comment_prefixes=(";",))
    parser.read_string((DOCKER / "supervisord.conf").read_text())
    return parser


def image_config() -> Path:
    return DOCKER / "config.toml"


def parses(argv: list[str]) -> Any:
    """The real ``tusflow`` parser accepts argv (SystemExit means it did not)."""
    try:
        return build_parser().parse_args(argv)
    except SystemExit as exc:  # pragma: no cover - the assertion message is the point
        raise AssertionError(f"tusflow {' '.join(argv)}: rejected by the argument parser") from exc


def tusflow_services(spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: svc for name, svc in spec["services"].items()
            if svc.get("image", "").startswith("tusflow") or "build" in svc}


def config_arg(argv: list[str]) -> str:
    return argv[argv.index("--config") + 1]


# ---------------------------------------------------------------------------- the Dockerfile
def test_dockerfile_builds_a_slim_non_root_image_with_ffmpeg() -> None:
    stages = dockerfile_stages()
    assert stages[-1][0] == ("FROM", "python:3.11-slim")
    runs = " ".join(instruction("RUN"))
    assert re.search(r"apt-get install[^&]*\bffmpeg\b", runs), "ffmpeg must be installed"
    assert "--no-install-recommends" in runs and "rm -rf /var/lib/apt/lists" in runs
    assert re.search(r"pip install (\S+)", runs)
    users = instruction("USER")
    assert users and users[-1] not in ("root", "0", "0:0"), "the image must not run as root"
    assert re.search(rf"useradd\b.*\b{re.escape(users[-1])}\b", runs), "USER must be created"
    assert exec_form(instruction("ENTRYPOINT")[-1]) == ["tusflow"]


def test_dockerfile_default_command_is_a_real_command() -> None:
    argv = exec_form(instruction("CMD")[-1])
    args = parses(argv)
    assert args.command == "serve"
    copies = {exec_dst for src, exec_dst in copies_of_final_stage() if src == "docker/config.toml"}
    assert config_arg(argv) == CONFIG_IN_IMAGE and copies == {CONFIG_IN_IMAGE}


def copies_of_final_stage(from_stage: bool = False) -> list[tuple[str, str]]:
    """(source, destination) of each COPY; local ones, or ``--from`` ones when asked."""
    pairs = []
    for args in instruction("COPY"):
        parts = args.split()
        flags = [p for p in parts if p.startswith("--")]
        paths = [p for p in parts if not p.startswith("--")]
        if any(f.startswith("--from") for f in flags) != from_stage:
            continue
        pairs.extend((src, paths[-1]) for src in paths[:-1])
    return pairs


def _ignore_pattern_matches(pattern: str, path: str) -> bool:
    if pattern == "**":
        return True
    if pattern.startswith("**/"):
        return any(fnmatch.fnmatchcase(part, pattern[3:]) for part in path.split("/"))
    return fnmatch.fnmatchcase(path, pattern) or path.startswith(pattern + "/")


def dockerignored(path: str) -> bool:
    """BuildKit's rule: the last matching pattern wins; ``!`` re-includes."""
    ignored = False
    for raw in (DOCKER / "Dockerfile.dockerignore").read_text().splitlines():
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        if _ignore_pattern_matches(pattern.lstrip("!").rstrip("/"), path.rstrip("/")):
            ignored = not negate
    return ignored


def test_dockerfile_copies_exist_and_reach_the_build() -> None:
    local = [src for src, _ in copies_of_final_stage()]
    for stage in dockerfile_stages()[:-1]:
        local += [p for ins, args in stage if ins == "COPY" for p in args.split()[:-1]
                  if not p.startswith("--")]
    assert local
    for src in local:
        assert (REPO / src).exists(), f"COPY {src}: not in the repository"
        assert not dockerignored(src), f"COPY {src}: excluded by Dockerfile.dockerignore"
    assert dockerignored(".venv") and dockerignored("node_modules") and dockerignored("tests")
    assert dockerignored("tus_server/__pycache__")


def test_image_serves_the_browser_libraries_from_npm() -> None:
    from tus_server.pages import NODE_MODULES_ENV, VENDOR
    env = dict(re.findall(r"(\w+)=(\S+)", " ".join(instruction("ENV"))))
    root = env.get(NODE_MODULES_ENV)
    assert root, f"ENV {NODE_MODULES_ENV} must point at the copied node_modules"
    copied = [dst for _, dst in copies_of_final_stage(from_stage=True)]
    for relative in VENDOR.values():
        target = f"{root}/{relative}"
        assert any(target.startswith(dst.rstrip("/") + "/") for dst in copied), f"{relative} not copied"
        source = REPO / "node_modules" / relative
        assert source.is_file(), f"{relative} missing from node_modules (npm ci)"


def test_image_paths_ports_and_volume_agree() -> None:
    settings = load_settings(image_config(), env={})
    assert settings.server.host == "0.0.0.0"
    assert str(settings.data_dir) == "/var/lib/tusflow"
    assert instruction("VOLUME") and str(settings.data_dir) in json.loads(instruction("VOLUME")[-1])
    assert instruction("EXPOSE") == [str(settings.server.port)]
    assert instruction("WORKDIR")[-1] == str(settings.data_dir)
    spec = compose()
    for name, svc in tusflow_services(spec).items():
        mounts = [v.split(":") for v in svc.get("volumes", [])]
        assert ["media", str(settings.data_dir)] in mounts, f"{name} must mount the shared data volume"
    # Clients come in through the proxy; the replicas publish nothing (--scale needs that).
    assert "ports" not in spec["services"]["server"]
    proxy = spec["services"]["proxy"]
    assert [p.rsplit(":", 1)[1] for p in proxy["ports"]] == [str(settings.server.port)]
    conf = nginx_conf()
    assert re.search(rf"^\s*listen {settings.server.port};", conf, re.M)
    assert re.search(rf"^\s*server server:{settings.server.port}\b", conf, re.M)


# ---------------------------------------------------------------------------- compose
def test_compose_commands_are_real_tusflow_commands() -> None:
    spec = compose()
    services = tusflow_services(spec)
    assert {"server", "worker", "migrate"} <= set(services)
    expected = {"server": "serve", "worker": "worker", "migrate": "migrate"}
    for name, svc in services.items():
        argv = svc["command"]
        assert isinstance(argv, list), f"{name}: use the exec form (a list)"
        assert parses(argv).command == expected[name]
        assert config_arg(argv) == CONFIG_IN_IMAGE
        assert svc["build"] == {"context": "..", "dockerfile": "docker/Dockerfile"}
    assert (DOCKER / services["server"]["build"]["context"] / services["server"]["build"]["dockerfile"]).is_file()


def test_compose_subcommands_run_with_help() -> None:
    """``tusflow <cmd> --help`` through the installed console script, as the image runs it."""
    commands = {svc["command"][0] for svc in tusflow_services(compose()).values()}
    commands.add(exec_form(instruction("CMD")[-1])[0])
    commands |= {shlex.split(s["command"])[1] for s in supervisor_programs().values()}
    procs = {c: subprocess.Popen([TUSFLOW, c, "--help"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True) for c in sorted(commands)}
    for command, proc in procs.items():
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0 and "--config" in out, f"tusflow {command} --help: {err}"


@pytest.mark.parametrize("env", [{}, {
    "POSTGRES_PASSWORD": "s3cret", "TUSFLOW_PUBLIC_URL": "https://video.lms.example",
    "TUSFLOW_TRUST_FORWARDED_HEADERS": "true", "TUSFLOW_AUTH_ENABLED": "true",
    "TUSFLOW_JWT_HS256_SECRET": "x" * 40, "TUSFLOW_WEBHOOK_URLS": '["https://lms.example/hooks"]',
    "TUSFLOW_WEBHOOK_SECRET": "w" * 32}], ids=["defaults", "production"])
def test_compose_environment_sets_real_config_keys(env: dict[str, str]) -> None:
    spec = compose(env)
    for name, svc in tusflow_services(spec).items():
        variables = {k: str(v) for k, v in svc["environment"].items()}
        assert all(k.startswith("TUSFLOW_") and "__" in k for k in variables), variables
        settings = load_settings(image_config(), env=variables)  # raises on unknown keys/values
        for var, raw in variables.items():
            section, _, key = var[len("TUSFLOW_"):].lower().partition("__")
            try:
                expected: Any = tomllib.loads(f"v = {raw}")["v"]
            except tomllib.TOMLDecodeError:
                expected = raw
            owner = getattr(settings, section)
            table, _, subkey = key.partition("__")  # TUSFLOW_STORAGE__S3__BUCKET
            if subkey:
                owner, key = getattr(owner, table), subkey
            actual = getattr(owner, key)
            if isinstance(actual, tuple):
                expected = tuple(expected)
            assert actual == expected, f"{name}: {var}={raw!r} gave {actual!r}"
        db = urlsplit(settings.database.url)
        pg = spec["services"]["postgres"]["environment"]
        assert (db.hostname, db.username, db.password, db.path.lstrip("/")) == (
            "postgres", pg["POSTGRES_USER"], pg["POSTGRES_PASSWORD"], pg["POSTGRES_DB"])
        assert urlsplit(settings.redis.url).hostname in spec["services"]


def test_compose_start_order_health_checks_and_scaling() -> None:
    spec = compose()
    services = spec["services"]
    for name, svc in services.items():
        for dep, cond in (svc.get("depends_on") or {}).items():
            assert dep in services, f"{name} depends on unknown {dep}"
            if cond["condition"] == "service_healthy":
                assert "healthcheck" in services[dep], f"{dep} has no health check"
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["migrate"]["restart"] == "no"
    for name in ("server", "worker"):
        assert services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        assert services[name]["depends_on"]["redis"]["condition"] == "service_healthy"
    for name in ("server", "redis", "postgres"):
        assert services[name]["healthcheck"]["test"][0] in ("CMD", "CMD-SHELL")
    worker = services["worker"]
    assert worker["deploy"]["replicas"] >= 2
    assert "container_name" not in worker and "ports" not in worker, "--scale needs both absent"
    named = set(spec["volumes"])
    for name, svc in services.items():
        for volume in svc.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):  # a file of docker/ mounted read-only
                assert (DOCKER / source).is_file() and volume.endswith(":ro"), f"{name}: {volume}"
                continue
            assert source in named, f"{name}: volume {volume} not declared"
    assert any("/var/lib/postgresql/data" in v for v in services["postgres"]["volumes"])
    assert any(v.endswith(":/data") for v in services["redis"]["volumes"])


def nginx_conf() -> str:
    return (DOCKER / "nginx.conf").read_text()


def test_compose_scales_out_without_sticky_sessions() -> None:
    """Two (or more) server replicas behind a round-robin proxy, locks in Redis, S3 from
    SeaweedFS (not MinIO), and workers that scale: issue 11's deployment."""
    spec = compose()
    services = spec["services"]
    server = services["server"]
    assert server["deploy"]["replicas"] >= 2 and "container_name" not in server
    assert services["proxy"]["depends_on"]["server"]["condition"] == "service_healthy"
    conf = re.sub(r"#.*", "", nginx_conf())
    for sticky in ("ip_hash", "hash ", "sticky", "least_conn"):
        assert sticky not in conf, f"the proxy must not pin clients to a replica ({sticky})"
    for line in ("client_max_body_size 0;", "proxy_request_buffering off;", "proxy_buffering off;"):
        assert line in conf, f"tus bodies and event streams must stream through: {line}"
    settings = load_settings(image_config(), env={k: str(v) for k, v in server["environment"].items()})
    assert settings.locks.backend == "redis"
    s3 = services["s3"]
    assert s3["image"].startswith("chrislusf/seaweedfs")
    script = " ".join(s3["command"])
    assert "weed mini" in script and "-master.telemetry=false" in script and "-dir=/data" in script
    assert all("minio" not in str(svc.get("image", "")).lower() for svc in services.values())
    # The bucket, endpoint and credentials the services use are the ones the S3 server makes.
    s3_env = s3["environment"]
    assert (settings.storage.s3.access_key_id, settings.storage.s3.secret_access_key,
            settings.storage.s3.bucket) == (s3_env["S3_ACCESS_KEY_ID"], s3_env["S3_SECRET_ACCESS_KEY"],
                                            s3_env["S3_BUCKET"])
    endpoint = urlsplit(settings.storage.s3.endpoint_url)
    assert endpoint.hostname == "s3" and endpoint.port == 8333
    assert "s3data" in spec["volumes"] and any(v.endswith(":/data") for v in s3["volumes"])
    for name in ("server", "worker"):
        assert services[name]["depends_on"]["s3"]["condition"] == "service_healthy"
    with_s3 = compose({"TUSFLOW_STORAGE_BACKEND": "s3"})["services"]["server"]["environment"]
    assert load_settings(image_config(), env={k: str(v) for k, v in with_s3.items()}).storage.backend == "s3"


def grace_seconds(value: str) -> float:
    total = 0.0
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)(h|m|s)", value):
        total += float(number) * {"h": 3600, "m": 60, "s": 1}[unit]
    return total


def test_stop_grace_covers_draining_and_transcodes() -> None:
    services = compose()["services"]
    assert grace_seconds(services["server"]["stop_grace_period"]) > 30, "uvicorn drains for 30 s"
    worker_grace = grace_seconds(services["worker"]["stop_grace_period"])
    assert worker_grace >= int(supervisor_programs()["tusflow-worker"]["stopwaitsecs"])


def healthcheck_probe() -> tuple[list[str], int, str]:
    test = compose()["services"]["server"]["healthcheck"]["test"]
    argv = test[1:] if test[0] == "CMD" else ["sh", "-c", test[1]]
    match = re.search(r"http://127\.0\.0\.1:(\d+)(/[\w/]*)", " ".join(argv))
    assert match, f"health check must probe the server over HTTP: {test}"
    return argv, int(match.group(1)), match.group(2)


def test_healthcheck_path_is_an_app_route(settings: Any) -> None:
    from starlette.routing import Route
    from tus_server.app import create_app
    _, port, path = healthcheck_probe()
    assert port == load_settings(image_config(), env={}).server.port
    app = create_app(settings)
    try:
        paths = {r.path for r in app.routes if isinstance(r, Route)}
        assert path in paths and path in ("/readyz", "/healthz"), (path, sorted(paths))
    finally:
        app.state.ctx.close()


def test_healthcheck_command_passes_only_when_ready(start_server: Callable[..., TusflowServer],
                                                    redis_server: RedisServer) -> None:
    """The compose probe itself, aimed at a real server: healthy with Redis, unhealthy without."""
    argv, port, _ = healthcheck_probe()
    server = start_server(redis={"url": redis_server.url})
    real_port = str(urlsplit(server.origin).port)
    probe = [sys.executable if a == "python" else a.replace(f":{port}/", f":{real_port}/") for a in argv]

    def run_probe() -> subprocess.CompletedProcess[str]:
        return subprocess.run(probe, capture_output=True, text=True, timeout=30)

    healthy = run_probe()
    assert healthy.returncode == 0, healthy.stderr
    redis_server.stop()
    unhealthy = run_probe()
    assert unhealthy.returncode != 0, "probe passed with Redis down"


# ---------------------------------------------------------------------------- supervisor
def supervisor_programs() -> dict[str, Mapping[str, str]]:
    parser = supervisor()
    return {s.split(":", 1)[1]: parser[s] for s in parser.sections() if s.startswith("program:")}


def test_supervisor_worker_matches_the_original_setup() -> None:
    programs = supervisor_programs()
    worker = programs["tusflow-worker"]
    assert int(worker["numprocs"]) == 2
    assert worker["autorestart"] == "true" and worker["autostart"] == "true"
    assert int(worker["stopwaitsecs"]) >= 3600
    assert "%(process_num)" in worker["process_name"], "numprocs > 1 needs distinct names"
    assert "%(process_num)" in worker["stdout_logfile"], "one log file per process"
    assert worker["stopsignal"] == "TERM"
    # the worker decides how its job ends; ffmpeg must not get the SIGTERM directly
    assert worker["stopasgroup"] == "false" and worker["killasgroup"] == "true"
    assert worker["user"] not in ("root", "0")


def test_supervisor_commands_are_real_tusflow_commands() -> None:
    programs = supervisor_programs()
    assert {"tusflow-worker", "tusflow-server"} <= set(programs)
    expected = {"tusflow-worker": "worker", "tusflow-server": "serve"}
    for name, program in programs.items():
        argv = shlex.split(program["command"])
        assert Path(argv[0]).name == "tusflow", f"{name}: run the tusflow console script"
        assert parses(argv[1:]).command == expected[name]
        assert config_arg(argv[1:]) == CONFIG_IN_IMAGE


def test_readme_commands_parse() -> None:
    text = (DOCKER / "README.md").read_text()
    blocks = re.findall(r"```sh\n(.*?)```", text, re.S)
    found = 0
    for line in "\n".join(blocks).splitlines():
        line = line.split(" #", 1)[0].strip()
        words = shlex.split(line) if line else []
        for i, word in enumerate(words):
            as_user = i > 0 and words[i - 1] in ("-u", "-o", "--user", "--owner")
            if Path(word).name == "tusflow" and not as_user and i + 1 < len(words) \
                    and not words[i + 1].startswith("-"):
                argv = words[i + 1:]
                argv = argv[:argv.index("&&")] if "&&" in argv else argv
                parses(argv)
                found += 1
    assert found >= 2


# ---------------------------------------------------------------------------- the install
def test_regular_install_contains_every_data_file(tmp_path: Path) -> None:
    """What ``pip install`` puts in the image: the packages as setuptools builds them from
    pyproject.toml. An editable install (the venv) reads the source tree and hides a missing
    ``package-data`` entry; the image does not."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    packages = ("tus_server", "models", "transcoder")
    for name in packages:
        shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, "-c", "import setuptools; setuptools.setup()", "-q",
                             "build_py", "-d", str(out)], cwd=src, capture_output=True, text=True,
                            timeout=120, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    assert result.returncode == 0, result.stderr
    # Only `tusflow migrate --autogenerate` (a developer tool) reads the template.
    dev_only = {"models/migrations/script.py.mako"}
    missing = sorted(str(p.relative_to(src)) for name in packages for p in (src / name).rglob("*")
                     if p.is_file() and not (out / p.relative_to(src)).is_file()
                     and str(p.relative_to(src)) not in dev_only)
    assert missing == [], f"not installed by `pip install .` (add to [tool.setuptools.package-data]): {missing}"
