"""The README's examples run as written."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


def _blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def _example(marker: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    (source,) = [b for b in _blocks() if marker in b]
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, Any] = {"__name__": "readme_example"}
    exec(compile(source, str(README), "exec"), namespace)
    return namespace


def test_readme_names_two_commands() -> None:
    text = README.read_text()
    assert "websession demo" in text
    assert "pip install -e '.[dev]' && pytest" in text


def test_wsgi_example_counts_visits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    app = _example("websession.wsgi", tmp_path, monkeypatch)["app"]
    with httpx.Client(transport=httpx.WSGITransport(app=app), base_url="http://x") as client:
        assert client.get("/").text == "visit number 1\n"
        assert client.get("/").text == "visit number 2\n"
    assert (tmp_path / "sessions.db").exists()


@pytest.mark.anyio
async def test_asgi_example_counts_visits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    app = _example("websession.asgi", tmp_path, monkeypatch)["app"]
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://x") as client:
        assert (await client.get("/")).text == "visit number 1\n"
        assert (await client.get("/")).text == "visit number 2\n"
