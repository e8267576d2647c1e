"""The gateway's import direction, as apps/gateway/__init__.py states it, read from the
source (every import statement, also those inside functions)."""

import ast
import importlib
import sys
from pathlib import Path

import pytest

import apps.gateway

ROOT = Path(apps.gateway.__file__).parent
PACKAGE = "apps.gateway"

# Lowest first: a module may import its own layer and the layers before it.
LAYERS = (
    ("protocol",),
    ("backends",),
    ("errors",),
    ("exchange",),
    ("caches", "metrics", "limits", "metering", "estimates", "load"),
    ("upstream",),
    ("state",),
    ("call", "filtering"),
    ("endpoints",),
    ("app",),
)


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join((PACKAGE, *parts))


def _imports(path: Path) -> set[str]:
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base]) if base else ".".join(anchor)
            found.add(base)
            # "from apps.gateway.upstream import client" imports a module too.
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def _gateway_modules() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in ROOT.rglob("*.py") if "migrations" not in p.parts}
    graph = {}
    for name, path in modules.items():
        graph[name] = {m for m in _imports(path) if m in modules and m != name}
    return graph


GRAPH = _gateway_modules()
IMPORTS = {_module_name(p): _imports(p) for p in ROOT.rglob("*.py")}


def _layer(module: str) -> int | None:
    first = module.removeprefix(PACKAGE + ".").split(".")[0]
    for index, names in enumerate(LAYERS):
        if first in names:
            return index
    return None


def _cycle() -> list[str] | None:
    done: set[str] = set()
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        if module in path:
            return [*path[path.index(module) :], module]
        if module in done:
            return None
        path.append(module)
        for imported in sorted(GRAPH[module]):
            if found := visit(imported):
                return found
        path.pop()
        done.add(module)
        return None

    for module in sorted(GRAPH):
        if found := visit(module):
            return found
    return None


def test_no_gateway_module_imports_another_in_a_circle():
    assert _cycle() is None


def test_gateway_modules_import_only_from_their_layer_or_below():
    upward = sorted(
        f"{module} → {imported}"
        for module, imported_set in GRAPH.items()
        for imported in imported_set
        if _layer(module) is not None
        and _layer(imported) is not None
        and _layer(imported) > _layer(module)
    )
    assert upward == []


def test_every_gateway_module_has_a_place_in_the_layers():
    unplaced = sorted(
        m for m in GRAPH if m != PACKAGE and _layer(m) is None and not _is_django_scaffolding(m)
    )
    assert unplaced == []


def _is_django_scaffolding(module: str) -> bool:
    first = module.removeprefix(PACKAGE + ".").split(".")[0]
    return first in ("apps", "management", "demo_upstream")


def test_only_the_upstream_package_imports_aiohttp():
    importers = sorted(
        m
        for m, imported in IMPORTS.items()
        if any(i == "aiohttp" or i.startswith("aiohttp.") for i in imported)
        and not m.startswith(PACKAGE + ".upstream.")
    )
    assert importers == []


def test_protocol_code_imports_nothing_from_django():
    importers = sorted(
        m
        for m, imported in IMPORTS.items()
        if m.startswith(PACKAGE + ".protocol")
        and any(i == "django" or i.startswith("django.") for i in imported)
    )
    assert importers == []


def test_protocol_code_imports_nothing_from_the_rest_of_the_gateway():
    outside = sorted(
        f"{m} → {i}"
        for m, imported in IMPORTS.items()
        if m.startswith(PACKAGE + ".protocol")
        for i in imported
        if (i == PACKAGE or i.startswith(PACKAGE + ".")) and not i.startswith(PACKAGE + ".protocol")
    )
    assert outside == []


def test_the_gateway_fails_to_start_when_a_route_module_cannot_be_imported(monkeypatch):
    # A broken module must stop the process at start-up, not turn its routes into 404s.
    # (None in sys.modules makes its import raise ImportError; the earlier name of the
    # /v1/messages module is blocked too, so the test means the same on either layout.)
    for name in ("apps.gateway.endpoints.messages", "apps.gateway.messages"):
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.delitem(sys.modules, "apps.gateway.app")
    with pytest.raises(ImportError):
        importlib.import_module("apps.gateway.app").GatewayApp()
