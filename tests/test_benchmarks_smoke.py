"""The benchmark runner works end to end in a tiny configuration (websession and Beaker)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("beaker")

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = ("read", "write", "new", "untouched")


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, Any]]:
    out = tmp_path_factory.mktemp("bench") / "out.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.run",
            "--quick",
            "--iterations",
            "20",
            "--repeats",
            "2",
            "--only",
            "wsgi,memory,cookie,beaker",
            "--json",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout, json.loads(out.read_text(encoding="utf-8"))


@pytest.mark.parametrize("impl", ["websession", "beaker"])
@pytest.mark.parametrize("store", ["memory", "cookie"])
def test_every_scenario_is_measured(
    report: tuple[str, dict[str, Any]], impl: str, store: str
) -> None:
    rows = [r for r in report[1]["rows"] if r["impl"] == impl and r["store"] == store]
    assert sorted(r["scenario"] for r in rows) == sorted(SCENARIOS)
    for row in rows:
        assert row["family"] == "wsgi"
        assert row["skipped"] == ""
        assert row["median_us"] > 0
        assert row["baseline_us"] > 0
        assert row["overhead_us"] is not None
        assert row["iterations"] == 20
        assert len(row["samples_us"]) == 2


def test_only_selects_family_store_and_peer(report: tuple[str, dict[str, Any]]) -> None:
    rows = report[1]["rows"]
    assert {r["family"] for r in rows} == {"wsgi"}
    assert {r["store"] for r in rows} == {"memory", "cookie"}
    assert {r["impl"] for r in rows} == {"websession", "beaker"}


def test_output_has_facts_tables_and_target_lines(report: tuple[str, dict[str, Any]]) -> None:
    stdout, data = report
    assert "  python: " in stdout
    assert "journal_mode=" in stdout
    assert "== memory store" in stdout
    assert "== cookie store" in stdout
    assert "raw signed-cookie reference" in stdout
    checks = [t["check"] for t in data["targets"]]
    assert any("memory overhead <= 8" in c for c in checks)
    assert any("cookie read <= 2x" in c for c in checks)
    assert data["untouched_store_calls"]["wsgi memory"] == 0
    peer = next(r for r in data["rows"] if r["impl"] == "beaker" and r["scenario"] == "read")
    assert peer["ratio"] is None or peer["ratio"] > 0


def test_a_missing_server_is_reported_not_measured(tmp_path: Path) -> None:
    """Without a Redis server the run still succeeds and says plainly what it could not measure."""
    out = tmp_path / "out.json"
    env = {
        **os.environ,
        # Port 1 on loopback: nothing listens there, so the connection is refused at once.
        "WEBSESSION_REDIS_URL": "redis://127.0.0.1:1/0",
    }
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.run",
            "--quick",
            "--iterations",
            "5",
            "--repeats",
            "1",
            "--only",
            "wsgi,redis,beaker",
            "--json",
            str(out),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    data = json.loads(out.read_text(encoding="utf-8"))
    rows = data["rows"]
    assert {r["impl"] for r in rows} == {"websession", "beaker"}
    for row in rows:
        assert row["store"] == "redis"
        assert "no Redis server" in row["skipped"]
        assert row["overhead_us"] is None
    assert "not measured: no Redis server at WEBSESSION_REDIS_URL=" in done.stdout
    assert "redis store level not measured" in done.stdout
    assert data["store_level"] == []
    assert data["request_split"] == []
    assert not any("redis" in t["check"] for t in data["targets"])


def test_network_run_splits_a_read_request_and_measures_the_lazy_case(tmp_path: Path) -> None:
    """On the real Redis and PostgreSQL servers: the split section and the autoload=False rows."""
    from services import redis_client

    redis_client().close()  # skips (fails under CI) without a Redis server
    out = tmp_path / "net.json"
    done = subprocess.run(
        [
            sys.executable, "-m", "benchmarks.run", "--quick", "--iterations", "5",
            "--repeats", "1", "--only", "wsgi,asgi,redis", "--json", str(out),
        ],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    data = json.loads(out.read_text(encoding="utf-8"))
    (split,) = data["request_split"]
    assert split["store"] == "redis"
    assert split["raw_name"] == "GET"
    for name in ("raw_us", "local_us", "back_to_back_us", "ours_us"):
        assert split[name] > 0
    assert "where a WSGI read request goes" in done.stdout
    lazy = {
        r["scenario"]: r
        for r in data["rows"]
        if r["impl"] == "websession lazy" and r["family"] == "asgi" and r["store"] == "redis"
    }
    assert set(lazy) == set(SCENARIOS)
    assert all(row["skipped"] == "" for row in lazy.values())
