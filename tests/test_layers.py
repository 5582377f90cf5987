"""The import layers, enforced: no cycles, the core never imports a shell, the CLI's command
modules never import the CLI entry point, and no module grows past about 500 lines.

Read from the source with ast (module-level imports, TYPE_CHECKING blocks left out), so the
test needs no server and fails the moment a cycle or an upward import comes back.
"""

from __future__ import annotations

import ast
import pathlib

import redis_streaming

PKG = pathlib.Path(redis_streaming.__file__).parent

# Pure core: decides what to send and what replies mean; imports nothing that does I/O.
CORE = {
    "_codec", "_model", "_errors", "_backoff", "_batching", "_ops", "_plans", "_lag",
    "_streamcore", "_workersteps", "_workercore", "_workerrecovery", "_produce", "_entries",
}  # fmt: skip
# Shells and everything built on them: the core must never reach up to these.
SHELLS = {
    "stream", "worker", "_drive", "_produce_io", "_liveness", "aio", "cli", "demo", "partition",
    "partition_pool", "pool", "metrics", "consumers", "server", "cluster_server", "quickstart",
}  # fmt: skip
MAX_LINES = 520  # "about 500"


def _module_name(path: pathlib.Path) -> str:
    rel = path.relative_to(PKG).with_suffix("")
    parts = [p for p in rel.parts if p != "__init__"]
    return ".".join(parts) or "__init__"


def _imports(path: pathlib.Path, name: str) -> set[str]:
    """Intra-package modules imported at module level (relative or absolute)."""
    tree = ast.parse(path.read_text())
    package = name.rsplit(".", 1)[0] if path.name != "__init__.py" else name
    if "." not in name and path.name != "__init__.py":
        package = ""
    out: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".") if package else []
                base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
                mod = ".".join([*base, *([node.module] if node.module else [])])
            elif node.module and node.module.startswith("redis_streaming"):
                mod = node.module[len("redis_streaming") :].lstrip(".")
            else:
                continue
            targets = [mod] if node.module else []
            for alias in node.names:
                sub = f"{mod}.{alias.name}" if mod else alias.name
                if (PKG / (sub.replace(".", "/") + ".py")).exists() or (
                    PKG / sub.replace(".", "/") / "__init__.py"
                ).exists():
                    targets.append(sub)
            out.update(t for t in targets if t)
    return out


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in PKG.rglob("*.py") if p.name != "__main__.py"}
    return {
        name: {m for m in _imports(path, name) if m in modules} for name, path in modules.items()
    }


def test_no_import_cycles() -> None:
    graph = _graph()
    seen: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        seen[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt == "__init__" or (nxt.endswith("__init__")):
                continue
            if seen.get(nxt) == 1:
                cycle = [*stack[stack.index(nxt) :], nxt]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if nxt not in seen:
                visit(nxt)
        stack.pop()
        seen[node] = 2

    for node in sorted(graph):
        if node not in seen and node != "__init__":
            visit(node)


def test_the_core_never_imports_a_shell() -> None:
    graph = _graph()
    for name in CORE:
        upward = {m for m in graph[name] if m.split(".")[0] in SHELLS}
        assert not upward, f"{name} imports {sorted(upward)}"


def test_cli_command_modules_never_import_the_entry_point() -> None:
    graph = _graph()
    commands = [name for name in graph if name.startswith("cli.")]
    assert {"cli._parser", "cli._common", "cli._input", "cli.produce", "cli.worker"} <= set(
        commands
    )
    for name in commands:
        assert "cli" not in graph[name], f"{name} imports cli/__init__"
    # The graph leaves out ``from . import X`` of a name that is no module, and imports inside
    # functions: in a command module, ``from . import`` may only name sibling modules.
    siblings = {name.split(".", 1)[1] for name in commands}
    for path in (PKG / "cli").glob("*.py"):
        if path.name == "__init__.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ImportFrom):
                continue
            names = {a.name for a in node.names}
            if node.level == 1 and not node.module:
                assert names <= siblings, f"cli/{path.name} imports {names - siblings} from cli"
            absolute = node.module if not node.level else None
            from_cli = node.module == "cli" or ("cli" in names and not node.module)
            upward = node.level == 2 and from_cli
            assert not upward, f"cli/{path.name} imports cli"
            assert absolute != "redis_streaming.cli", f"cli/{path.name} imports cli"
            assert not (absolute == "redis_streaming" and "cli" in names), f"cli/{path.name}"


def test_modules_stay_small() -> None:
    for path in PKG.rglob("*.py"):
        lines = len(path.read_text().splitlines())
        assert lines <= MAX_LINES, f"{path.relative_to(PKG)} has {lines} lines"
