"""The README's library example runs as documented."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

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
