"""Guards the layout rules of docs/architecture.md (design §3)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from oai_bridge.backends import BACKENDS

PKG = Path(__file__).resolve().parents[1] / "src" / "oai_bridge"
PURE = [
    "types.py",
    "errors.py",
    "sse.py",
    "chunks.py",
    "media.py",
    "backends/livepeer/media.py",
    *(f"backends/{k}/{f}" for k in BACKENDS for f in ("wire.py", "translate.py")),
]
IO_MODULES = ("aiohttp", "starlette", "uvicorn", "httpx", "socket", "asyncio.streams")


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
    found = {name for name in imports(PKG / module) if name.split(".")[0] in {m.split(".")[0] for m in IO_MODULES}}
    assert not found, f"{module} imports {found}"


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
