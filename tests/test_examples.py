"""The README's library example runs as documented, and every config example in the docs loads."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_library_example_runs() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "library_stream.py")], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines == [
        "Simulated reply to: Tell me about Livepeer",
        "usage: {'prompt_tokens': 8, 'completion_tokens': 7, 'total_tokens': 15}",
        "non-stream: Simulated reply to: Tell me about Livepeer",
    ]


def test_readme_documents_every_option() -> None:
    from oai_bridge.config import OPTIONS

    text = (ROOT / "docs" / "configuration.md").read_text()
    for option in OPTIONS:
        assert option.flag in text and option.env in text and f"`{option.name}`" in text, option.name


@pytest.mark.parametrize("doc", ["README.md", "docs/configuration.md", "docs/backends.md"])
def test_config_examples_in_the_docs_load(doc: str, tmp_path: Path) -> None:
    """Every TOML example in the docs is a config file the bridge accepts as it stands."""
    from oai_bridge.assemble import build_backends
    from oai_bridge.config import load_settings

    text = (ROOT / doc).read_text()
    blocks = re.findall(r"```toml\n(.*?)```", text, re.DOTALL)
    assert blocks, doc
    for number, block in enumerate(blocks):
        path = tmp_path / f"example{number}.toml"
        path.write_text(block)
        settings = load_settings(config_file=path, environ={})
        keys = {b.api_key_env: "test-key" for b in settings.backends if b.api_key_env}
        build_backends(settings, gateway_url=settings.gateway_url or "http://127.0.0.1:1", environ=keys)
