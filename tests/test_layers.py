"""The import contract: layers point one way, and first-party code is imported plainly.

web (``tus_server``) → worker (``transcoder``) → core (``models``); the command-line client
(``tusflow_client``) stands apart and imports none of them. The web layer reaches the worker
only through the modules in ``WORKER_INTERFACES``. The checker reads source with ``ast`` (no
imports are executed), so a wrong-way import fails here even when it sits in a function body
or a code path no other test runs.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("tus_server", "transcoder", "models", "tusflow_client")
# What each package may import from the others.
ALLOWED: dict[str, set[str]] = {
    "models": set(),
    "transcoder": {"models"},
    "tus_server": {"transcoder", "models", "tusflow_client"},
    "tusflow_client": set(),
}
# The web layer's narrow view of the worker: the job queue, webhook delivery, the worker
# process it starts and the reconciler it runs from ``tusflow jobs``.
WORKER_INTERFACES = {"transcoder.queue", "transcoder.webhooks", "transcoder.worker",
                     "transcoder.reconcile", "transcoder.errors"}
# tus_server modules that may import tusflow_client: only the command table.
CLIENT_ENTRY = {"tus_server.cli"}


@dataclass(frozen=True)
class Violation:
    module: str
    line: int
    why: str

    def __str__(self) -> str:
        return f"{self.module}:{self.line}: {self.why}"


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[:len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _guarded(tree: ast.AST) -> set[int]:
    """Line numbers of imports inside ``try: ... except ImportError/ModuleNotFoundError``."""
    lines: set[int] = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Try):
            continue
        names = set()
        for handler in node.handlers:
            kinds = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
            names.update(k.id for k in kinds if isinstance(k, ast.Name))
        if names & {"ImportError", "ModuleNotFoundError"}:
            for stmt in node.body:
                lines.update(n.lineno for n in ast.walk(stmt) if isinstance(n, (ast.Import, ast.ImportFrom)))
    return lines


def check_source(module: str, source: str, is_package: bool = False) -> list[Violation]:
    """Every broken rule in one module's source."""
    package = module.split(".")[0]
    tree = ast.parse(source)
    guarded = _guarded(tree)
    found: list[Violation] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [(alias.name, None) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(module, is_package, node)
            targets = [(base, alias.name) for alias in node.names]
        else:
            continue
        for target, name in targets:
            full = ".".join(filter(None, (target, name)))  # ``from a import b``: b may be a module
            top = (target or full).split(".")[0]
            if top not in PACKAGES:
                continue
            if node.lineno in guarded:
                found.append(Violation(module, node.lineno, f"first-party import of {target} is guarded by "
                                       "except ImportError: import it plainly"))
            if top != package and top not in ALLOWED[package]:
                found.append(Violation(module, node.lineno, f"{package} must not import {target or full}"))
            if package == "tus_server" and top == "transcoder":
                if target not in WORKER_INTERFACES and full not in WORKER_INTERFACES:
                    found.append(Violation(module, node.lineno, f"web layer imports {full}, not one of the "
                                           f"worker's interfaces {sorted(WORKER_INTERFACES)}"))
            if package == "tus_server" and top == "tusflow_client" and module not in CLIENT_ENTRY:
                found.append(Violation(module, node.lineno, "only the command table may load the client"))
            if name and name.startswith("_") and not name.startswith("__") and target != module:
                found.append(Violation(module, node.lineno, f"imports the private name {name} from {target}"))
    found.extend(_getattr_guards(module, tree, package))
    return found


def _getattr_guards(module: str, tree: ast.AST, package: str) -> list[Violation]:
    """``getattr(first_party_module, "name", None)``: an optional-module guard in disguise."""
    modules: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules.update((a.asname or a.name).split(".")[0] for a in node.names
                           if a.name.split(".")[0] in PACKAGES)
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(module, False, node)
            if base.split(".")[0] in PACKAGES or (not base and node.level):
                modules.update(a.asname or a.name for a in node.names)
    found = []
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "getattr"
                and len(node.args) == 3 and isinstance(node.args[0], ast.Name) and node.args[0].id in modules
                and isinstance(node.args[1], ast.Constant)):
            found.append(Violation(module, node.lineno, f"getattr({node.args[0].id}, {node.args[1].value!r}, ...) "
                                   "guards first-party code: use the name plainly"))
    return found


def check_tree(root: Path) -> list[Violation]:
    found: list[Violation] = []
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            if "migrations" in path.parts and path.name != "__init__.py":
                continue  # alembic revisions import only alembic and sqlalchemy
            found.extend(check_source(module_name(root, path), path.read_text(), path.name == "__init__.py"))
    return found


def test_the_tree_keeps_the_contract() -> None:
    violations = check_tree(ROOT)
    assert not violations, "import contract broken:\n" + "\n".join(map(str, violations))


@pytest.mark.parametrize(("module", "source", "why"), [
    ("models.tables", "from tus_server.app import create_app\n", "models must not import tus_server.app"),
    ("models.db", "def f():\n    import transcoder.jobs\n", "models must not import transcoder.jobs"),
    ("transcoder.jobs", "from tus_server import publish\n", "transcoder must not import tus_server"),
    ("tusflow_client.runner", "from models.config import Settings\n", "tusflow_client must not import models.config"),
    ("tus_server.api.media", "from transcoder.pipeline import transcode\n", "web layer imports transcoder.pipeline"),
    ("tus_server.api.media", "from transcoder import pipeline\n", "web layer imports transcoder.pipeline"),
    ("tus_server.api.changes", "from tus_server.api.items import _unfinished\n", "private name _unfinished"),
    ("tus_server.publish", "try:\n    from transcoder import queue\nexcept ImportError:\n    queue = None\n",
     "guarded by except ImportError"),
    ("tus_server.pages", "from tusflow_client import runner\n", "only the command table"),
    ("transcoder.queue", "from .. import tus_server\n", "transcoder must not import tus_server"),
    ("tus_server.commands.up", "from models import db\nmigrate = getattr(db, 'migrate', None)\n",
     "getattr(db, 'migrate', ...)"),
])
def test_a_wrong_way_import_is_caught(module: str, source: str, why: str) -> None:
    violations = check_source(module, source)
    assert any(why in str(v) for v in violations), violations


@pytest.mark.parametrize(("module", "source"), [
    ("tus_server.publish", "from transcoder.queue import enqueue_transcode\n"),
    ("transcoder.jobs", "from models.lifecycle import MediaState\nimport redis\n"),
    ("tus_server.cli", "import importlib\nfrom models.config import ConfigError\n"),
    ("models.db", "try:\n    import psycopg\nexcept ImportError:\n    psycopg = None\n"),
    ("tus_server.tus.handlers", "from tus_server.tus import headers as H\nfrom .errors import TusError\n"),
])
def test_allowed_imports_pass(module: str, source: str) -> None:
    assert check_source(module, source) == []
