"""The house rules of STYLE.md, read from the code: every module of watcher/ and analyzers/ is
parsed (never imported) and every import statement in it counted, at module level or inside a
function, under `if TYPE_CHECKING:` or not, relative ones resolved.

- no import cycle between modules. Only the imports written are edges, not the parent packages
  Python runs first; a package's __init__ re-exporting its children is no cycle with them, even
  when they import names back from it, but a cycle through a re-export that leaves the package
  on the way back is one;
- analyzers never imports watcher; analyzers/tcp reaches neither analyzers/http nor analyzers/rules,
  directly or through another module;
- watcher uses analyzers only as `from analyzers import X`, X in analyzers.__all__;
- pyinotify is imported only by watcher/capture/inotify.py; each client library (redis, zmq,
  prometheus_client, confluent_kafka) only inside watcher/sinks/, at module level by one sink module,
  which the others import only where the output is configured (inside a function);
- no module over MAX_MODULE_LINES lines.

The checker is tested too, on a small tree that breaks each rule once.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("watcher", "analyzers")
# A module past this is asking to be split along a seam (STYLE.md aims at about 400).
MAX_MODULE_LINES = 450
# Imported by exactly one module: a swap of the library is then a one-room change.
INOTIFY_LIBRARY, INOTIFY_MODULE = "pyinotify", "watcher.capture.inotify"
SINKS = "watcher.sinks"
# Client libraries of outputs: loaded only when such an output is configured.
CLIENT_LIBRARIES = ("redis", "zmq", "prometheus_client", "confluent_kafka")


@dataclass(frozen=True, slots=True)
class Import:
    """One name one module imports."""

    importer: str
    name: str  # absolute: `import a.b` -> "a.b"; `from a import b` -> "a.b" (a module, or a name in a)
    base: str  # the module the statement names: "a.b", or "a" for `from a import b`
    line: int
    eager: bool  # runs when the importer is imported: module level, not under TYPE_CHECKING


class House:
    """The modules under `root`'s packages and their imports."""

    def __init__(self, root: Path, packages: tuple[str, ...] = PACKAGES) -> None:
        self.root = root
        self.paths: dict[str, Path] = {}
        for pkg in packages:
            for path in sorted((root / pkg).rglob("*.py")):
                parts = path.relative_to(root).with_suffix("").parts
                self.paths[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
        self.imports = [imp for name in self.paths for imp in self._imports_of(name)]
        # Edges between our modules, each with the line of its first import statement.
        self.graph: dict[str, dict[str, int]] = {name: {} for name in self.paths}
        for imp in self.imports:
            target = self.resolve(imp)
            if target is not None and target != imp.importer:
                self.graph[imp.importer].setdefault(target, imp.line)

    def _imports_of(self, module: str) -> list[Import]:
        path = self.paths[module]
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        out: list[Import] = []

        def walk(node: ast.AST, eager: bool) -> None:
            if isinstance(node, ast.Import):
                out.extend(Import(module, a.name, a.name, node.lineno, eager) for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")
                    base = ".".join([*parts[:len(parts) - node.level + 1], *([base] if base else [])])
                out.extend(Import(module, f"{base}.{a.name}", base, node.lineno, eager) for a in node.names)
            for field, value in ast.iter_fields(node):
                for child in value if isinstance(value, list) else [value]:
                    if isinstance(child, ast.AST):
                        walk(child, eager and not _lazy(node, field))

        walk(ast.parse(path.read_text(encoding="utf-8"), str(path)), True)
        return out

    def resolve(self, imp: Import) -> str | None:
        """Which of our modules an import loads: the module named, else the longest known prefix."""
        if imp.name in self.paths:
            return imp.name
        name = imp.base
        while name and name not in self.paths:
            name = name.rpartition(".")[0]
        return name or None

    def where(self, module: str, line: int) -> str:
        return f"{self.paths[module].relative_to(self.root)}:{line}"

    def path_between(self, start: str, goal: set[str], within: set[str] | None = None,
                     graph: dict[str, dict[str, int]] | None = None) -> list[str] | None:
        """A shortest import path from `start` to a module in `goal` (through `within` only)."""
        graph = self.graph if graph is None else graph
        came: dict[str, str] = {}
        queue = [start]
        for m in queue:
            for t in sorted(graph[m]):
                if t in came or (within is not None and t not in within):
                    continue
                came[t] = m
                if t in goal:
                    path = [t]
                    while path[-1] != start or len(path) == 1:
                        path.append(came[path[-1]])
                    return path[::-1]
                queue.append(t)
        return None

    def show(self, path: list[str]) -> str:
        """a -> b -> c, and where each import is."""
        steps = "; ".join(f"{self.where(a, self.graph[a][b])} imports {b}" for a, b in pairwise(path))
        return f"{' -> '.join(path)} ({steps})"


def _lazy(node: ast.AST, field: str) -> bool:
    """Whether statements in `node`'s `field` do not run when the module is imported."""
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
        return True
    return isinstance(node, ast.If) and field == "body" and _is_type_checking(node.test)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _public_names(house: House, package: str) -> set[str]:
    """The string literals of `package`'s __all__."""
    for node in ast.parse(house.paths[package].read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
            return {e.value for e in ast.walk(node.value) if isinstance(e, ast.Constant) and isinstance(e.value, str)}
    return set()


def _in(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


# The rules: each returns its findings, one line each, naming the modules -----------------------

def import_cycles(house: House) -> list[str]:
    """Cycles of imports. A package importing its own children (re-exporting them) is no cycle
    with them, so those edges are left out first; a cycle that takes one and leaves the package
    on the way back is a cycle all the same, and is looked for after."""
    inner = {m: {t: line for t, line in ts.items() if not _in(t, m)} for m, ts in house.graph.items()}
    out = []
    for members in _strongly_connected(inner):
        first = min(members)
        cycle = house.path_between(first, {first}, members, inner)
        assert cycle is not None
        also = f" (all of {', '.join(sorted(members))} are in it)" if len(members) > len(cycle) - 1 else ""
        out.append(f"import cycle: {house.show(cycle)}{also}")
    for package in sorted(house.graph):
        for child in sorted(set(house.graph[package]) - set(inner[package])):
            outside = {m for m in house.paths if not _in(m, package)}
            for o in sorted(outside):
                there = house.path_between(child, {o})
                back = house.path_between(o, {package}) if there is not None else None
                if there is not None and back is not None:
                    out.append(f"import cycle: {house.show([package, *there, *back[1:]])}")
                    break
    return out


def _strongly_connected(graph: dict[str, dict[str, int]]) -> list[set[str]]:
    """Tarjan's strongly connected sets of more than one module, in order of their first."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    sets: list[set[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            members = {stack.pop()}
            while v not in members:
                members.add(stack.pop())
            if len(members) > 1:
                sets.append(members)

    for v in sorted(graph):
        if v not in index:
            strong(v)
    return sorted(sets, key=min)


def analyzers_import_watcher(house: House) -> list[str]:
    return [f"{house.where(m, line)}: analyzers imports watcher: {m} imports {t}"
            for m in sorted(house.graph) if _in(m, "analyzers")
            for t, line in sorted(house.graph[m].items()) if _in(t, "watcher")]


def tcp_reaches_http_or_rules(house: House) -> list[str]:
    """analyzers/tcp knows nothing of HTTP or rules, not even through another module."""
    above = {m for m in house.paths if _in(m, "analyzers.http") or _in(m, "analyzers.rules")}
    out = []
    for m in sorted(house.paths):
        if _in(m, "analyzers.tcp"):
            path = house.path_between(m, above)
            if path is not None:
                out.append(f"analyzers/tcp reaches {path[-1]}: {house.show(path)}")
    return out


def watcher_beside_public_names(house: House) -> list[str]:
    """watcher imports analyzers only as `from analyzers import X`, X one of analyzers.__all__."""
    public = _public_names(house, "analyzers") if "analyzers" in house.paths else set()
    out = []
    for imp in house.imports:
        if not _in(imp.importer, "watcher") or not _in(imp.name, "analyzers"):
            continue
        at = f"{house.where(imp.importer, imp.line)}: {imp.importer}"
        if imp.base != "analyzers" or imp.name == imp.base:  # a submodule, or `import analyzers`
            out.append(f"{at} imports {imp.base}: watcher uses analyzers only as `from analyzers import X`")
        elif imp.name.partition(".")[2] not in public:
            out.append(f"{at} imports {imp.name}, which is not in analyzers.__all__")
    return out


def library_owners(house: House) -> list[str]:
    """pyinotify in its one module; each client library inside watcher/sinks/ only, loaded at
    import time by one sink module, which is itself imported only where it is configured."""
    out = []
    owners: dict[str, set[str]] = defaultdict(set)
    for imp in house.imports:
        library = imp.base.partition(".")[0]
        at = f"{house.where(imp.importer, imp.line)}: {imp.importer} imports {library}"
        if library == INOTIFY_LIBRARY and imp.importer != INOTIFY_MODULE:
            out.append(f"{at}: only {INOTIFY_MODULE} may")
        elif library in CLIENT_LIBRARIES and not house.resolve(imp):
            if not _in(imp.importer, SINKS):
                out.append(f"{at}: client libraries are imported only in {SINKS}")
            elif imp.eager:
                owners[library].add(imp.importer)
    for library, modules in sorted(owners.items()):
        if len(modules) > 1:
            out.append(f"{library} is imported at module level by {', '.join(sorted(modules))}: one sink module "
                       "owns it, the others import it inside a function")
    owned: dict[str, set[str]] = defaultdict(set)
    for library, modules in owners.items():
        for m in modules:
            owned[m].add(library)
    for imp in house.imports:
        target = house.resolve(imp)
        if target in owned and imp.eager and target != imp.importer:
            out.append(f"{house.where(imp.importer, imp.line)}: {imp.importer} imports {target} (and so "
                       f"{', '.join(sorted(owned[target]))}) at module level: import it where that output is "
                       "configured")
    return out


def long_modules(house: House) -> list[str]:
    out = []
    for m, path in sorted(house.paths.items()):
        n = len(path.read_text(encoding="utf-8").splitlines())
        if n > MAX_MODULE_LINES:
            out.append(f"{path.relative_to(house.root)}: {m} has {n} lines, over {MAX_MODULE_LINES}: split it")
    return out


RULES = (import_cycles, analyzers_import_watcher, tcp_reaches_http_or_rules, watcher_beside_public_names,
         library_owners, long_modules)


@pytest.fixture(scope="module")
def house() -> House:
    return House(ROOT)


@pytest.mark.parametrize("rule", RULES, ids=[r.__name__ for r in RULES])
def test_the_house_holds(house: House, rule: Callable[[House], list[str]]) -> None:
    assert len(house.paths) > 50  # the tree was found
    findings = rule(house)
    assert not findings, "\n".join(findings)


# The checker itself ------------------------------------------------------------------------------

def _tree(root: Path, files: dict[str, str]) -> House:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return House(root)


SYNTHETIC = {
    "analyzers/__init__.py": "from analyzers.flows import Table\nfrom analyzers.tcp.frames import F\n"
                             "__all__ = ['Table', 'F']\n",
    "analyzers/flows.py": "from analyzers.tcp import frames\nfrom .http.parser import P\nclass Table: ...\n",
    # A package re-exporting a child that imports names from it: no cycle.
    "analyzers/tcp/__init__.py": "from analyzers.tcp.frames import F\n",
    # tcp reaches http through pipeline, from inside a function.
    "analyzers/tcp/frames.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from analyzers.tcp import F\n"
                               "class F: ...\ndef f():\n    from analyzers.pipeline import run\n",
    "analyzers/tcp/reassembly.py": "from . import frames\n",
    "analyzers/pipeline.py": "import analyzers.http.parser\n",
    "analyzers/http/__init__.py": "",
    # A cycle through a relative import and a TYPE_CHECKING one.
    "analyzers/http/parser.py": "from .resync import r\nclass P: ...\n",
    "analyzers/http/resync.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                                "    from analyzers.http.parser import P\nr = 1\n",
    # A cycle through a package's re-export that leaves the package.
    "analyzers/rules/__init__.py": "from analyzers.rules.engine import Engine\n",
    "analyzers/rules/engine.py": "from analyzers.routes import Route\nclass Engine: ...\n",
    "analyzers/routes.py": "from analyzers.rules import Engine\nclass Route: ...\n",
    "analyzers/redact.py": "import watcher.cli\n" + "x = 1\n" * 450,
    "watcher/__init__.py": "",
    "watcher/cli.py": "from analyzers import Table, flows\nimport analyzers.flows\nimport redis\nimport analyzers\n",
    "watcher/capture/__init__.py": "",
    "watcher/capture/inotify.py": "try:\n    import pyinotify\nexcept ImportError:\n    pass\n",
    "watcher/capture/spool.py": "def f():\n    import pyinotify.constants\n",
    "watcher/sinks/__init__.py": "",
    "watcher/sinks/zmq_sink.py": "import zmq\nfrom redis import Redis\n",
    "watcher/sinks/zmq_tail.py": "import zmq.asyncio\nfrom watcher.sinks.zmq_sink import S\n"
                                 "def tail():\n    from watcher.sinks.zmq_sink import T\n",
    "watcher/sinks/redis_sink.py": "def f():\n    import redis\n",
}


def test_the_checker_finds_what_breaks_each_rule(tmp_path: Path) -> None:
    house = _tree(tmp_path, SYNTHETIC)
    assert import_cycles(house) == [
        "import cycle: analyzers.http.parser -> analyzers.http.resync -> analyzers.http.parser "
        "(analyzers/http/parser.py:1 imports analyzers.http.resync; "
        "analyzers/http/resync.py:3 imports analyzers.http.parser)",
        "import cycle: analyzers.rules -> analyzers.rules.engine -> analyzers.routes -> analyzers.rules "
        "(analyzers/rules/__init__.py:1 imports analyzers.rules.engine; "
        "analyzers/rules/engine.py:1 imports analyzers.routes; analyzers/routes.py:1 imports analyzers.rules)"]
    assert analyzers_import_watcher(house) == [
        "analyzers/redact.py:1: analyzers imports watcher: analyzers.redact imports watcher.cli"]
    via = ("analyzers.tcp.frames -> analyzers.pipeline -> analyzers.http.parser (analyzers/tcp/frames.py:6 imports "
           "analyzers.pipeline; analyzers/pipeline.py:1 imports analyzers.http.parser)")
    assert tcp_reaches_http_or_rules(house) == [
        "analyzers/tcp reaches analyzers.http.parser: analyzers.tcp -> " + via.replace(
            " (", " (analyzers/tcp/__init__.py:1 imports analyzers.tcp.frames; "),
        "analyzers/tcp reaches analyzers.http.parser: " + via,
        "analyzers/tcp reaches analyzers.http.parser: analyzers.tcp.reassembly -> " + via.replace(
            " (", " (analyzers/tcp/reassembly.py:1 imports analyzers.tcp.frames; ")]
    assert watcher_beside_public_names(house) == [
        "watcher/cli.py:1: watcher.cli imports analyzers.flows, which is not in analyzers.__all__",
        "watcher/cli.py:2: watcher.cli imports analyzers.flows: watcher uses analyzers only as "
        "`from analyzers import X`",
        "watcher/cli.py:4: watcher.cli imports analyzers: watcher uses analyzers only as `from analyzers import X`"]
    assert library_owners(house) == [
        "watcher/capture/spool.py:2: watcher.capture.spool imports pyinotify: only watcher.capture.inotify may",
        "watcher/cli.py:3: watcher.cli imports redis: client libraries are imported only in watcher.sinks",
        "zmq is imported at module level by watcher.sinks.zmq_sink, watcher.sinks.zmq_tail: one sink module owns "
        "it, the others import it inside a function",
        "watcher/sinks/zmq_tail.py:2: watcher.sinks.zmq_tail imports watcher.sinks.zmq_sink (and so redis, zmq) "
        "at module level: import it where that output is configured"]
    assert long_modules(house) == ["analyzers/redact.py: analyzers.redact has 451 lines, over 450: split it"]


def test_the_checker_passes_a_tree_that_keeps_the_rules(tmp_path: Path) -> None:
    house = _tree(tmp_path, {
        "analyzers/__init__.py": "from analyzers.flows import Table\n__all__ = ['Table']\n",
        "analyzers/flows.py": "from analyzers.tcp.frames import F\nclass Table: ...\n",
        "analyzers/tcp/__init__.py": "from analyzers.tcp.frames import F\n",
        "analyzers/tcp/frames.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import F2\n",
        "watcher/__init__.py": "",
        "watcher/cli.py": "from analyzers import Table\ndef run():\n    from watcher.sinks.redis_sink import S\n",
        "watcher/sinks/__init__.py": "",
        "watcher/sinks/redis_sink.py": "import redis\nfrom redis.retry import Retry\n",
        "watcher/sinks/zmq_tail.py": "def f():\n    import redis\n",
    })
    assert [finding for rule in RULES for finding in rule(house)] == []
