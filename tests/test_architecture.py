"""Guards the layout rules of docs/architecture.md (design §3)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from oai_bridge.backends import BACKENDS

PKG = Path(__file__).resolve().parents[1] / "src" / "oai_bridge"
#: I/O lives in each backend's ``backend.py`` and these; every other module of a backend is pure.
BACKEND_IO = {"backend.py", "__init__.py", "media_io.py", "video_io.py", "transport.py"}
PURE = [
    "types.py",
    "errors.py",
    "redact.py",
    "sse.py",
    "ndjson.py",
    "chunks.py",
    "media.py",
    "embeddings.py",
    "routes.py",
    "failover.py",
    *sorted(
        p.relative_to(PKG).as_posix()
        for k in BACKENDS
        for p in (PKG / "backends" / k).glob("*.py")
        if p.name not in BACKEND_IO
    ),
]
IO_MODULES = ("aiohttp", "httptools", "starlette", "uvicorn", "httpx", "socket", "ssl", "asyncio.streams")


def imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("module", PURE)
def test_pure_modules_do_no_io(module: str) -> None:
    io_roots = {m.split(".")[0] for m in IO_MODULES}
    found = {name for name in imports(PKG / module) if name.split(".")[0] in io_roots}
    assert not found, f"{module} imports {found}"
    # nor through a module of the package that does I/O
    inner = {n for n in absolute_imports(PKG / module) if n.startswith("oai_bridge.")}
    assert not any(n.startswith(("oai_bridge.backends.http", "oai_bridge.server")) for n in inner), (module, inner)


def test_nothing_outside_server_imports_starlette() -> None:
    for path in PKG.rglob("*.py"):
        if "server" in path.relative_to(PKG).parts:
            continue
        assert not any(n.split(".")[0] == "starlette" for n in imports(path)), path


def test_every_backend_folder_has_the_three_files_and_one_registry_line() -> None:
    folders = {p.name for p in (PKG / "backends").iterdir() if p.is_dir() and not p.name.startswith("_")}
    assert folders == set(BACKENDS)
    for kind in BACKENDS:
        for name in ("wire.py", "translate.py", "backend.py"):
            assert (PKG / "backends" / kind / name).is_file(), f"{kind}/{name}"


def test_no_backend_kind_switch_outside_the_registry() -> None:
    for path in PKG.rglob("*.py"):
        text = path.read_text()
        for kind in BACKENDS:
            assert f'kind == "{kind}"' not in text and f"kind == '{kind}'" not in text, path


def test_handlers_hold_no_translation() -> None:
    names = imports(PKG / "server" / "handlers.py")
    assert not any(".translate" in n or n.endswith("backends.livepeer") for n in names), names


def test_file_sizes() -> None:
    root = PKG.parents[1]
    for path in [*PKG.rglob("*.py"), *(root / "tests").rglob("*.py"), *(root / "bench").rglob("*.py")]:
        if "node_modules" in path.parts:
            continue
        lines = len(path.read_text().splitlines())
        assert lines <= 800, f"{path} has {lines} lines (hard stop 800)"


def absolute_imports(path: Path) -> set[str]:
    """Every module ``path`` imports, relative imports resolved (``from ..x import y`` → ``oai_bridge.x``
    and ``oai_bridge.x.y``)."""
    rel = path.relative_to(PKG.parent).with_suffix("")
    package = list(rel.parts[:-1]) if rel.name != "__init__" else list(rel.parts[:-1])
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join([*base, *(node.module.split(".") if node.module else [])])
            else:
                module = node.module or ""
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


#: Where a backend may be named besides its own folder and the registry: the Livepeer backend is
#: also the embedded default (its flat [livepeer] options, the simulator) and the library's face.
LIVEPEER_USERS = {"__init__.py", "config.py", "assemble.py"}


def test_adding_a_backend_touches_only_its_folder_the_registry_and_tests() -> None:
    for path in PKG.rglob("*.py"):
        rel = path.relative_to(PKG)
        if rel.as_posix() == "backends/__init__.py" or rel.parts[0] == "simulators":
            continue
        found = absolute_imports(path)
        for kind in BACKENDS:
            if rel.parts[:2] == ("backends", kind) or (kind == "livepeer" and rel.as_posix() in LIVEPEER_USERS):
                continue
            module = f"oai_bridge.backends.{kind}"
            assert not any(n == module or n.startswith(module + ".") for n in found), f"{rel} imports {module}"
    # and every kind is in the one test that holds them all to the same contract
    conformance = (PKG.parents[1] / "tests" / "server" / "test_conformance.py").read_text()
    assert "sorted(BACKENDS)" in conformance
