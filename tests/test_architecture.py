"""The package's shape: no import cycles among bmsgate modules (module level, as Python runs them).

Imports inside functions and under ``TYPE_CHECKING`` are left out: they run later or never, which is
how optional libraries and the odd back-reference are kept out of the import-time graph.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import bmsgate

_ROOT = Path(bmsgate.__file__).parent


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(_ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _module_level_imports(tree: ast.Module) -> Iterator[ast.Import | ast.ImportFrom]:
    """Import statements that run when the module is imported (not in functions or TYPE_CHECKING)."""
    pending: list[ast.stmt] = list(tree.body)
    while pending:
        node = pending.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        elif isinstance(node, ast.If):
            if not _is_type_checking(node.test):
                pending.extend(node.body)
            pending.extend(node.orelse)
        elif isinstance(node, ast.Try):
            pending.extend([*node.body, *node.orelse, *node.finalbody])
            for handler in node.handlers:
                pending.extend(handler.body)
        elif isinstance(node, ast.With | ast.ClassDef):
            pending.extend(node.body)


def _targets(node: ast.Import | ast.ImportFrom, module: str, is_package: bool, known: set[str]) -> set[str]:
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        base = node.module or ""
        if node.level:
            anchor = module.split(".") if is_package else module.split(".")[:-1]
            anchor = anchor[: len(anchor) - (node.level - 1)]
            base = ".".join([*anchor, base] if base else anchor)
        # `from package import module` imports that module; `from module import name` only the module.
        names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
    found = set()
    for imported in names:
        # Importing a.b.c runs a and a.b first: the nearest known module stands for the statement.
        name = imported
        while name and name not in known:
            name = name.rpartition(".")[0]
        if name and name != module:
            found.add(name)
    return found


def import_graph() -> dict[str, set[str]]:
    files = {_module_name(path): path for path in _ROOT.rglob("*.py")}
    known = set(files)
    graph = {}
    for module, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        is_package = path.name == "__init__.py"
        edges: set[str] = set()
        for node in _module_level_imports(tree):
            edges |= _targets(node, module, is_package, known)
        graph[module] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path (first module repeated at the end), or None."""
    done: set[str] = set()
    stack: list[str] = []
    on_stack: set[str] = set()

    def visit(module: str) -> list[str] | None:
        stack.append(module)
        on_stack.add(module)
        for target in sorted(graph.get(module, ())):
            if target in on_stack:
                return [*stack[stack.index(target) :], target]
            if target not in done and (cycle := visit(target)) is not None:
                return cycle
        on_stack.discard(stack.pop())
        done.add(module)
        return None

    for module in sorted(graph):
        if module not in done and (cycle := visit(module)) is not None:
            return cycle
    return None


def test_no_import_cycles_among_bmsgate_modules() -> None:
    graph = import_graph()
    assert "bmsgate.app.outputs" in graph and "bmsgate.inverter.controller" in graph
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])


def test_outputs_never_import_the_demo() -> None:
    graph = import_graph()
    assert "bmsgate.app.demo" not in graph["bmsgate.app.outputs"]
    assert "bmsgate.app.outputs" in graph["bmsgate.app.demo"]


def test_the_cycle_finder_finds_cycles() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


_LONG_MODULE = 600
"""Lines above which a module must say at its top why it is one module."""


def test_long_modules_say_why_they_are_one_module() -> None:
    unexplained = []
    for path in sorted(_ROOT.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        docstring = ast.get_docstring(ast.parse(text)) or ""
        if text.count("\n") > _LONG_MODULE + 20 and "Why one long module" not in docstring:
            unexplained.append(f"{path.relative_to(_ROOT)} ({text.count(chr(10))} lines)")
    assert not unexplained, f"split these by concept or say 'Why one long module: ...' at the top: {unexplained}"


_ADAPTERS = {
    "bleak": {"bmsgate.transports.ble"},
    "bleak_retry_connector": {"bmsgate.transports.ble"},
    "serial": {"bmsgate.transports.serial"},
    "serial_asyncio_fast": {"bmsgate.transports.serial"},
    "aiomqtt": {"bmsgate.mqtt.client"},
    "paho": {"bmsgate.mqtt.client"},
    "pymodbus": {"bmsgate.inverter.modbus.server"},
    "can": {"bmsgate.inverter.can.bus"},
    "cantools": set(),
    "yoyo": {"bmsgate.fleet.server.store.migrate"},
    "psycopg": {"bmsgate.fleet.server.store.postgres", "bmsgate.fleet.server.store.postgres_lock"},
    "cryptography": {"bmsgate.fleet.server.tls"},
    "litestar": {
        "bmsgate.fleet.server.api.app",
        "bmsgate.fleet.server.api.rollouts",
        "bmsgate.fleet.server.api.overview_routes",
    },
    "uvicorn": {"bmsgate.fleet.server.api.server"},
    "playwright": set(),
    "msgspec": {"bmsgate.fleet.server.store.jsoncodec"},
    "tuf": {"bmsgate.packs.trust"},
    "securesystemslib": {"bmsgate.packs.trust"},
    "nats": {"bmsgate.fleet.server.nats_ingest", "bmsgate.fleet.server.nats_broadcast"},
}
"""Each third-party I/O library and the one adapter module allowed to import it."""


def test_each_library_is_imported_by_its_one_adapter() -> None:
    importers: dict[str, set[str]] = {library: set() for library in _ADAPTERS}
    for path in sorted(_ROOT.rglob("*.py")):
        module = _module_name(path)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top in importers:
                    importers[top].add(module)
    strays = {library: sorted(found - _ADAPTERS[library]) for library, found in importers.items()}
    assert not any(strays.values()), {library: modules for library, modules in strays.items() if modules}


_PURE = (
    "bmsgate.model",
    "bmsgate.protocols.compiled",
    "bmsgate.protocols.session",
    "bmsgate.protocols.framing",
    "bmsgate.catalog",
    "bmsgate.capture.analysis",
    "bmsgate.inverter.bank",
    "bmsgate.inverter.limits",
    "bmsgate.inverter.status",
    "bmsgate.inverter.can.profiles",
    "bmsgate.inverter.modbus.registermap",
    "bmsgate.inverter.modbus.requests",
    "bmsgate.inverter.modbus.store",
    "bmsgate.inverter.rs485.pylontech",
    "bmsgate.homeassistant.discovery",
    "bmsgate.homeassistant.entities",
    "bmsgate.fleet.server.rollouts.planner",
)
"""The sans-IO core (with every module of protocols/ and capture/): importing one of these never pulls in
asyncio, sockets or the runtime."""
_IO_MODULES = frozenset({"asyncio", "socket", "selectors", "ssl", "threading", "subprocess"})


def test_the_pure_core_imports_no_io() -> None:
    graph = import_graph()
    external: dict[str, set[str]] = {}
    for path in _ROOT.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        names = set()
        for node in _module_level_imports(tree):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif not node.level and node.module:
                names.add(node.module.split(".")[0])
        external[_module_name(path)] = names
    roots = {*_PURE, *(module for module in graph if module.startswith(("bmsgate.protocols", "bmsgate.capture")))}
    for root in sorted(roots):
        seen, pending = set(), [root]
        while pending:
            module = pending.pop()
            if module in seen:
                continue
            seen.add(module)
            pending.extend(graph.get(module, ()))
        assert not any(module.startswith(("bmsgate.runtime", "bmsgate.transports.")) for module in seen), (
            root,
            sorted(module for module in seen if module.startswith(("bmsgate.runtime", "bmsgate.transports."))),
        )
        io = {module: external[module] & _IO_MODULES for module in seen if external.get(module, set()) & _IO_MODULES}
        assert not io, (root, io)
