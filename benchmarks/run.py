"""Benchmark websession against its peers, in-process, on the same stores, in one run.

    python -m benchmarks.run [--quick] [--only NAME[,NAME...]] [--json out.json]

Every figure is the median over repeats of the mean time per request; a
case's overhead is its median minus the median of its framework's own
baseline (the same app, no session layer), timed in alternation with it so
that drift on a busy machine hits both alike. On Redis and PostgreSQL,
websession is also timed in alternation with the raw client round trips it
cannot avoid (see ``raw_network``), and reported as a multiple of them.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import os
import platform
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path

from . import network, raw_cookie, raw_network
from .common import (
    NETWORK_STORES,
    SCENARIOS,
    STORES,
    Budget,
    Case,
    Family,
    Timing,
    Unavailable,
    asgi_caller,
    asgi_request,
    asgi_scope,
    call_n,
    cookies_from,
    measure,
    wsgi_builder,
    wsgi_caller,
    wsgi_environ,
    wsgi_request,
)
from .websession_stores import SQLITE_SYNCHRONOUS, CountingStore, journal_mode, make_store

FAMILIES = ("wsgi", "asgi", "flask", "django", "starlette")
#: Targets are judged where the framework adds the least noise of its own.
TARGET_FAMILIES = ("wsgi", "asgi")
PACKAGES = (
    "websession",
    "msgspec",
    "beaker",
    "flask",
    "flask-session",
    "cachelib",
    "flask-sqlalchemy",
    "sqlalchemy",
    "django",
    "starlette",
    "starsessions",
    "redis",
    "hiredis",
    "psycopg",
)

# Targets from the project's issue, in microseconds of overhead (or multiples of the raw cookie).
MEMORY_MAX_US = 8.0
COOKIE_READ_MAX_X = 2.0
COOKIE_WRITE_MAX_X = 2.0
SQLITE_READ_MAX_US = 20.0
SQLITE_WRITE_MAX_US = 60.0
UNTOUCHED_MAX_US = 2.0
#: Network stores, as multiples of the raw client's round trips in the same run.
RAW_MAX_X = {"redis": 1.15, "postgresql": 1.3}
RAW_NAMES = {
    "redis": {"read": "GET", "write": "GET+SET", "new": "SET"},
    "postgresql": {"read": "SELECT", "write": "SELECT+UPDATE"},
}
#: The stores on this machine, where the untouched target applies (a network store in its
#: async form loads when the request starts: see the network section).
LOCAL_STORES = tuple(s for s in STORES if s not in NETWORK_STORES)


@dataclass
class Row:
    family: str
    impl: str
    store: str
    scenario: str
    note: str = ""
    is_websession: bool = False
    median_us: float | None = None
    baseline_us: float | None = None
    overhead_us: float | None = None
    ratio: float | None = None
    samples_us: list[float] = field(default_factory=list)
    iterations: int = 0
    skipped: str = ""
    #: Network stores: the raw client work of this scenario (median µs, same run) ...
    reference_us: float | None = None
    #: ... and the overhead as a multiple of it (paired per repeat for websession).
    raw_ratio: float | None = None


def _paired(fns: Sequence[Callable[[], None]], budget: Budget) -> list[Timing]:
    """Time the callables in alternating repeats (each calibrated on its own)."""
    probe = Budget(
        1, budget.target_seconds, budget.min_iterations, budget.max_iterations, budget.iterations
    )
    counts = [measure(fn, probe).iterations for fn in fns]
    samples: list[list[float]] = [[] for _ in fns]
    clock = time.perf_counter_ns
    for _ in range(budget.repeats):
        for fn, n, out in zip(fns, counts, samples, strict=True):
            start = clock()
            call_n(fn, n)
            out.append((clock() - start) / n)
    return [Timing(tuple(s), n) for s, n in zip(samples, counts, strict=True)]


def network_budget(budget: Budget) -> Budget:
    """Three times the repeats, each a quarter as long, for cases that wait on a server.

    A round trip on this kind of machine switches between a fast and a slow
    regime as the scheduler moves the server process (22 vs 65 µs for the
    same query), for tens of milliseconds at a time; shorter repeats in finer
    alternation put both sides of a pair in the same regime more often.
    """
    if budget.iterations is not None:
        return budget
    return Budget(
        repeats=budget.repeats * 3,
        target_seconds=budget.target_seconds / 4,
        min_iterations=budget.min_iterations,
        max_iterations=budget.max_iterations,
    )


def _median_ratio(numerators: Sequence[float], denominators: Sequence[float]) -> float:
    """The median of per-repeat ratios: a slow moment slows both sides of its pair alike."""
    return statistics.median(a / b for a, b in zip(numerators, denominators, strict=True))


def _load_family(name: str, workdir: Path) -> Family:
    if name == "asgi":
        module = importlib.import_module(".starlette_family", __package__)
        family: Family = module.bare_family(workdir)
    else:
        module = importlib.import_module(f".{name}_family", __package__)
        family = module.family(workdir)
    return family


def _selected(case: Case, only: Sequence[str]) -> bool:
    if not only:
        return True
    names = {case.family, case.impl, case.store, f"{case.family}:{case.impl}"}
    return case.is_websession or any(o in names for o in only)


def run_benchmarks(
    budget: Budget,
    *,
    only: Sequence[str] = (),
    families: Sequence[str] = FAMILIES,
    stores: Sequence[str] = STORES,
    scenarios: Sequence[str] = SCENARIOS,
    workdir: Path,
    progress: Callable[[str], None] = lambda _msg: None,
) -> tuple[list[Row], dict[str, str]]:
    """Measure every selected case; returns the rows and the families that could not run.

    websession's own cases always run, so every peer has something to be compared with.
    """
    rows: list[Row] = []
    missing: dict[str, str] = {}
    for name in families:
        try:
            family = _load_family(name, workdir)
        except (Unavailable, ImportError) as exc:
            missing[name] = str(exc)
            continue
        cases = [c for c in family.cases if c.store in stores and _selected(c, only)]
        if not cases:
            continue
        progress(f"{family.name}: {family.title}")
        for scenario in scenarios:
            family_base = family.baseline(scenario)
            for case in cases:
                row = Row(
                    family.name, case.impl, case.store, scenario, case.note, case.is_websession
                )
                rows.append(row)
                try:
                    try:
                        fn = case.build(scenario)
                        base_fn = case.baseline(scenario) if case.baseline else family_base
                        ref = case.reference(scenario) if case.reference else None
                    except Unavailable as exc:
                        row.skipped = str(exc)
                        continue
                    gc.collect()
                    timings = _paired(
                        [base_fn, fn] if ref is None else [base_fn, fn, ref],
                        network_budget(budget) if case.store in NETWORK_STORES else budget,
                    )
                finally:
                    network.release()
                base, timed = timings[0], timings[1]
                row.median_us = timed.median_us
                row.baseline_us = base.median_us
                # The median of paired differences: a repeat slowed by another process on the
                # machine slows its baseline neighbour too, and the pair cancels it.
                diffs = [c - b for c, b in zip(timed.per_call_ns, base.per_call_ns, strict=True)]
                row.overhead_us = statistics.median(diffs) / 1000.0
                if ref is not None:
                    row.reference_us = timings[2].median_us
                    row.raw_ratio = _median_ratio(diffs, timings[2].per_call_ns)
                row.samples_us = [round(s / 1000, 3) for s in timed.per_call_ns]
                row.iterations = timed.iterations
                progress(
                    f"  {case.impl:<22} {case.store:<10} {scenario:<9} "
                    f"{row.overhead_us:9.1f} us over {row.baseline_us:.1f}"
                    + (f" ({row.raw_ratio:.2f}x raw)" if row.raw_ratio is not None else "")
                )
    _add_ratios(rows)
    return rows, missing


def _add_ratios(rows: list[Row]) -> None:
    ours = {
        (r.family, r.store, r.scenario): r.overhead_us
        for r in rows
        if r.is_websession and r.overhead_us is not None
    }
    for row in rows:
        reference = ours.get((row.family, row.store, row.scenario))
        # Below a tenth of a microsecond the websession figure is noise, and so is any ratio.
        if row.overhead_us is not None and reference is not None and reference > 0.1:
            row.ratio = row.overhead_us / reference
    # Peers on a network store: their overhead over websession's raw reference, same run.
    raw = {
        (r.family, r.store, r.scenario): r.reference_us
        for r in rows
        if r.is_websession and r.reference_us is not None
    }
    for row in rows:
        floor = raw.get((row.family, row.store, row.scenario))
        if not row.is_websession and row.overhead_us is not None and floor:
            row.raw_ratio = row.overhead_us / floor


@dataclass
class StoreLevel:
    """websession's store call against the raw client doing the same, paired per repeat."""

    store: str
    form: str
    operation: str
    raw_name: str
    ours_us: float
    raw_us: float
    ratio: float


def store_level(
    budget: Budget, stores: Sequence[str], progress: Callable[[str], None]
) -> tuple[list[StoreLevel], dict[str, str]]:
    """Store-level figures for the network stores that are selected and reachable."""
    results: list[StoreLevel] = []
    missing: dict[str, str] = {}
    for kind in stores:
        if kind not in NETWORK_STORES:
            continue
        try:
            pairs = raw_network.references(kind).pairs()
        except Unavailable as exc:
            missing[kind] = str(exc)
            continue
        progress(f"store level: {kind}")
        for pair in pairs:
            gc.collect()
            raw, ours = _paired([pair.raw, pair.ours], network_budget(budget))
            item = StoreLevel(
                pair.store,
                pair.form,
                pair.operation,
                pair.raw_name,
                ours.median_us,
                raw.median_us,
                _median_ratio(ours.per_call_ns, raw.per_call_ns),
            )
            results.append(item)
            progress(
                f"  {pair.form:<5} {pair.operation:<11} {item.ours_us:8.1f} us vs "
                f"{pair.raw_name} {item.raw_us:.1f} = {item.ratio:.2f}x"
            )
    return results, missing


@dataclass
class RequestSplit:
    """Where a WSGI read request on a network store spends its time, paired per repeat.

    ``raw``: the bare round trip; ``local``: websession's whole read request on
    the memory store; ``back_to_back``: the round trip and then that memory-store
    request; ``ours``: the real read request on the network store. When
    ``back_to_back`` is close to ``ours`` the store call costs what the raw
    client does and the rest is request work, which runs slower right after a
    wait on the socket (caches and branch history cooled while the process slept)
    than it does in a hot loop (``local``).
    """

    store: str
    raw_name: str
    raw_us: float
    local_us: float
    back_to_back_us: float
    ours_us: float


def request_split(
    budget: Budget, stores: Sequence[str], workdir: Path, progress: Callable[[str], None]
) -> list[RequestSplit]:
    """A :class:`RequestSplit` for each selected, reachable network store."""
    from websession.stores import MemoryStore
    from websession.wsgi import SessionMiddleware

    from .wsgi_family import plain_app

    def read_request(store: object, name: str) -> Callable[[], None]:
        view = plain_app(lambda environ: environ["websession.session"])
        app = SessionMiddleware(view, store=store)
        return wsgi_builder(app, name)("read")

    results: list[RequestSplit] = []
    for kind in stores:
        if kind not in NETWORK_STORES or not network.available(kind):
            continue
        progress(f"request split: {kind}")
        ours = read_request(make_store(kind, workdir, f"split-{kind}"), f"websession {kind}")
        raw_ref = raw_network.references(kind).request_reference("read", asynchronous=False)
        if raw_ref is None:
            continue
        raw_fn: Callable[[], None] = raw_ref
        local = read_request(MemoryStore(), "websession memory")

        def back_to_back(
            raw_fn: Callable[[], None] = raw_fn, local: Callable[[], None] = local
        ) -> None:
            raw_fn()
            local()

        gc.collect()
        timings = _paired([raw_fn, local, back_to_back, ours], network_budget(budget))
        raw_t, local_t, both_t, ours_t = (t.median_us for t in timings)
        results.append(RequestSplit(kind, RAW_NAMES[kind]["read"], raw_t, local_t, both_t, ours_t))
    return results


def render_split(splits: Sequence[RequestSplit]) -> str:
    if not splits:
        return ""
    lines = [
        "\n== network stores: where a WSGI read request goes (paired repeats, µs per request) ==",
        f"{'store':<11} {'raw':>14} {'memory request':>15} {'raw, then memory request':>25} "
        f"{'websession request':>19}",
    ]
    for sp in splits:
        lines.append(
            f"{sp.store:<11} {sp.raw_name:>7} {sp.raw_us:6.1f} {sp.local_us:15.1f} "
            f"{sp.back_to_back_us:25.1f} {sp.ours_us:19.1f}"
        )
    lines.append(
        "  the memory request costs more right after a round trip than in a hot loop; "
        "'raw, then memory request' close to 'websession request' means the store call "
        "itself adds little and the rest is websession's request work, slowed by the wait"
    )
    return "\n".join(lines)


def raw_cookie_reference(budget: Budget) -> dict[str, float]:
    """Microseconds for the bare msgspec + base64 + HMAC read and write round trip."""
    return {name: measure(fn, budget).median_us for name, fn in raw_cookie.references().items()}


def untouched_store_calls(workdir: Path, requests: int = 200) -> dict[str, int]:
    """How many store calls untouched requests make, per driver, with a cookie present."""
    from websession.asgi import SessionMiddleware as ASGIMiddleware
    from websession.wsgi import SessionMiddleware as WSGIMiddleware

    from .starlette_family import make_app as starlette_app
    from .wsgi_family import plain_app

    counts: dict[str, int] = {}
    kinds = ["memory"]
    try:
        make_store("sqlite", workdir, "calls-probe")
        kinds.append("sqlite")
    except Unavailable:
        pass
    for kind in kinds:
        store = CountingStore(make_store(kind, workdir, f"calls-wsgi-{kind}"))
        wsgi = WSGIMiddleware(plain_app(lambda e: e["websession.session"]), store=store)
        cookie = cookies_from(wsgi_request(wsgi, wsgi_environ("/new"))[1])
        store.calls = 0
        call = wsgi_caller(wsgi, wsgi_environ("/untouched", cookie))
        for _ in range(requests):
            call()
        counts[f"wsgi {kind}"] = store.calls
        try:
            app = starlette_app(None)
        except ImportError:
            continue
        store = CountingStore(make_store(kind, workdir, f"calls-asgi-{kind}"))
        asgi = ASGIMiddleware(app, store=store)
        cookie = cookies_from(asgi_request(asgi, asgi_scope("/new"))[1])
        store.calls = 0
        acall = asgi_caller(asgi, asgi_scope("/untouched", cookie))
        for _ in range(requests):
            acall()
        counts[f"asgi {kind}"] = store.calls
    return counts


# -- facts, tables and targets -------------------------------------------------------------


def machine_facts(workdir: Path, stores: Sequence[str] = STORES) -> dict[str, str]:
    facts = {
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "platform": platform.platform(),
        "cpus": str(os.cpu_count()),
        "cpu": _cpu_model(),
        "load average at start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "sqlite": sqlite3.sqlite_version,
    }
    try:
        # The store opens its file lazily; one call makes it set its pragmas.
        make_store("sqlite", workdir, "facts-probe").load("0" * 64)
        mode = journal_mode(workdir / "ws-facts-probe.db")
        facts["websession sqlite"] = f"journal_mode={mode}, synchronous={SQLITE_SYNCHRONOUS}"
    except Unavailable as exc:
        facts["websession sqlite"] = f"unavailable ({exc})"
    facts["peer sqlite"] = (
        "WAL + synchronous=NORMAL for Beaker, Flask-Session and Django 'django'; "
        "Django 'django (stock sqlite)' keeps Django's defaults (journal=DELETE, synchronous=FULL)"
    )
    versions = []
    for package in PACKAGES:
        try:
            versions.append(f"{package} {metadata.version(package)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{package} (not installed)")
    facts["packages"] = ", ".join(versions)
    facts.update(network.server_facts([s for s in stores if s in NETWORK_STORES]))
    if any(s in NETWORK_STORES for s in stores):
        facts["asyncio"] = (
            "ASGI apps on a network store run on one default asyncio event loop "
            "(each repeat awaits its requests in one loop run; baselines alike)"
        )
    return facts


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _fmt(value: float | None, width: int, digits: int = 1) -> str:
    return f"{value:{width}.{digits}f}" if value is not None else " " * (width - 1) + "-"


def render_tables(rows: list[Row], scenarios: Sequence[str]) -> str:
    out: list[str] = []
    head = f"{'family':<10} {'implementation':<22}" + "".join(
        f" {s + ' µs':>13} {'x ws':>5}" for s in scenarios
    )
    for store in STORES:
        store_rows = [r for r in rows if r.store == store]
        if not store_rows:
            continue
        out.append(f"\n== {store} store: overhead over the framework's baseline, µs/request ==")
        out.append(head)
        out.append("-" * len(head))
        keys: list[tuple[str, str]] = []
        for r in store_rows:
            if (r.family, r.impl) not in keys:
                keys.append((r.family, r.impl))
        last_family = ""
        notes: list[str] = []
        for family, impl in keys:
            if family != last_family:
                base = {
                    r.scenario: r.baseline_us
                    for r in rows
                    if r.family == family and r.baseline_us is not None
                }
                line = f"{family:<10} {'(baseline, absolute)':<22}"
                line += "".join(f" {_fmt(base.get(s), 13)} {'':>5}" for s in scenarios)
                out.append(line)
                last_family = family
            by_scenario = {
                r.scenario: r for r in store_rows if r.family == family and r.impl == impl
            }
            line = f"{'':<10} {impl:<22}"
            for s in scenarios:
                cell = by_scenario.get(s)
                if cell is None or cell.overhead_us is None:
                    line += f" {'n/a':>13} {'':>5}"
                else:
                    line += f" {_fmt(cell.overhead_us, 13)} {_fmt(cell.ratio, 5)}"
            out.append(line)
            first = next(iter(by_scenario.values()))
            if first.skipped:
                notes.append(f"{family}/{impl}: not measured: {first.skipped}")
            elif first.note:
                notes.append(f"{family}/{impl}: {first.note}")
        out.extend("  note: " + n for n in notes)
    return "\n".join(out)


def _ws(rows: list[Row], family: str, store: str, scenario: str) -> float | None:
    for r in rows:
        if (r.family, r.store, r.scenario) == (family, store, scenario) and r.is_websession:
            return r.overhead_us
    return None


def _peer(rows: list[Row], family: str, impl: str, store: str, scenario: str) -> float | None:
    for r in rows:
        if (r.family, r.impl, r.store, r.scenario) == (family, impl, store, scenario):
            return r.overhead_us
    return None


def check_targets(
    rows: list[Row],
    raw: dict[str, float],
    calls: dict[str, int],
    levels: Sequence[StoreLevel] = (),
) -> list[tuple[bool, str]]:
    """(passed, line) for every target the issue sets, per framework family."""
    checks: list[tuple[bool, str]] = []
    families = [f for f in TARGET_FAMILIES if any(r.family == f and r.is_websession for r in rows)]
    for fam in families:
        mem = {s: _ws(rows, fam, "memory", s) for s in SCENARIOS}
        measured = {s: v for s, v in mem.items() if v is not None}
        if measured:
            worst = max(measured, key=lambda s: measured[s])
            detail = ", ".join(f"{s} {v:.1f}" for s, v in measured.items())
            checks.append(
                (
                    measured[worst] <= MEMORY_MAX_US,
                    f"[{fam}] memory overhead <= {MEMORY_MAX_US:g} µs in every scenario: {detail}",
                )
            )
        for scenario, limit in (("read", COOKIE_READ_MAX_X), ("write", COOKIE_WRITE_MAX_X)):
            ours = _ws(rows, fam, "cookie", scenario)
            if ours is None or not raw:
                continue
            floor = raw[scenario]
            line = (
                f"[{fam}] cookie {scenario} <= {limit:g}x raw msgspec+base64+HMAC "
                f"({floor:.1f} µs): websession {ours:.1f} µs = {ours / floor:.1f}x"
            )
            for impl in ("starlette", "starsessions", "flask (own cookie)", "django", "beaker"):
                peer = _peer(rows, fam, impl, "cookie", scenario)
                if peer is not None:
                    line += f"; {impl} {peer:.1f} µs = {peer / floor:.1f}x"
            checks.append((ours / floor <= limit, line))
        for scenario, limit_us in (("read", SQLITE_READ_MAX_US), ("write", SQLITE_WRITE_MAX_US)):
            ours = _ws(rows, fam, "sqlite", scenario)
            if ours is None:
                continue
            line = f"[{fam}] SQLite {scenario} <= {limit_us:g} µs: websession {ours:.1f} µs"
            for impl in ("django", "django (stock sqlite)", "flask-session", "beaker"):
                peer = _peer(rows, fam, impl, "sqlite", scenario)
                if peer is not None:
                    line += f"; {impl} {peer:.1f} µs"
            checks.append((ours <= limit_us, line))
        untouched = {s: _ws(rows, fam, s, "untouched") for s in LOCAL_STORES}
        got = {s: v for s, v in untouched.items() if v is not None}
        if got:
            worst_store = max(got, key=lambda s: got[s])
            detail = ", ".join(f"{s} {v:.1f}" for s, v in got.items())
            checks.append(
                (
                    got[worst_store] <= UNTOUCHED_MAX_US,
                    f"[{fam}] untouched <= {UNTOUCHED_MAX_US:g} µs: {detail}",
                )
            )
    for driver, count in calls.items():
        checks.append(
            (count == 0, f"untouched requests make no store call ({driver}): {count} calls")
        )
    checks.extend(network_targets(rows, list(levels)))
    return checks


_PEERS = ("beaker", "starsessions", "flask-session", "django")


def network_targets(rows: list[Row], levels: list[StoreLevel]) -> list[tuple[bool, str]]:
    """Redis within 1.15x and PostgreSQL within 1.3x of the raw round trips, same run.

    Request-level on the bare WSGI and ASGI families (sync and async clients),
    store-level for both forms of each store.
    """
    checks: list[tuple[bool, str]] = []
    operation = {"read": "load", "write": "load + save"}
    for store in NETWORK_STORES:
        limit = RAW_MAX_X[store]
        for scenario in ("read", "write"):
            raw_name = RAW_NAMES[store][scenario]
            for level in levels:
                if level.store == store and level.operation == operation[scenario]:
                    checks.append(
                        (
                            level.ratio <= limit,
                            f"[store {level.form}] {store} {level.operation} <= {limit:g}x raw "
                            f"{raw_name}: websession {level.ours_us:.1f} µs, raw "
                            f"{level.raw_us:.1f} µs = {level.ratio:.2f}x",
                        )
                    )
            for fam in TARGET_FAMILIES:
                ours = next(
                    (
                        r
                        for r in rows
                        if r.is_websession
                        and (r.family, r.store, r.scenario) == (fam, store, scenario)
                        and r.raw_ratio is not None
                    ),
                    None,
                )
                if (
                    ours is None
                    or ours.overhead_us is None
                    or ours.reference_us is None
                    or ours.raw_ratio is None
                ):
                    continue
                line = (
                    f"[{fam}] {store} {scenario} request <= {limit:g}x raw {raw_name} "
                    f"({ours.reference_us:.1f} µs): websession {ours.overhead_us:.1f} µs = "
                    f"{ours.raw_ratio:.2f}x"
                )
                for impl in _PEERS:
                    peer = _peer(rows, fam, impl, store, scenario)
                    if peer is not None:
                        line += f"; {impl} {peer:.1f} µs = {peer / ours.reference_us:.2f}x"
                checks.append((ours.raw_ratio <= limit, line))
    return checks


def render_network(rows: list[Row], levels: list[StoreLevel], scenarios: Sequence[str]) -> str:
    """websession and its peers on Redis and PostgreSQL as multiples of the raw round trips."""
    out: list[str] = []
    if levels:
        out.append(
            "\n== network stores, store level: websession's call / the raw client's "
            "(paired repeats, µs per call) =="
        )
        out.append(
            f"{'store':<11} {'form':<6} {'operation':<12} {'websession':>10} "
            f"{'raw':>16} {'ratio':>6}"
        )
        for level in levels:
            out.append(
                f"{level.store:<11} {level.form:<6} {level.operation:<12} "
                f"{level.ours_us:10.1f} {level.raw_name:>8} {level.raw_us:7.1f} "
                f"{level.ratio:5.2f}x"
            )
    net_rows = [r for r in rows if r.store in NETWORK_STORES and r.overhead_us is not None]
    if net_rows:
        out.append(
            "\n== network stores, request level: overhead / the raw round trips of the "
            "scenario (sync clients for WSGI families, asyncio for ASGI) =="
        )
        head = f"{'store':<11} {'family':<10} {'implementation':<16}" + "".join(
            f" {s:>15}" for s in scenarios
        )
        out.append(head)
        out.append("-" * len(head))
        keys: list[tuple[str, str, str]] = []
        for r in net_rows:
            if (r.store, r.family, r.impl) not in keys:
                keys.append((r.store, r.family, r.impl))
        for store, family, impl in keys:
            cells = {
                r.scenario: r
                for r in net_rows
                if (r.store, r.family, r.impl) == (store, family, impl)
            }
            line = f"{store:<11} {family:<10} {impl:<16}"
            for scenario in scenarios:
                cell = cells.get(scenario)
                if cell is None or cell.overhead_us is None:
                    line += f" {'n/a':>15}"
                elif cell.raw_ratio is None:
                    line += f" {cell.overhead_us:9.1f}      "
                else:
                    line += f" {cell.overhead_us:7.1f} {cell.raw_ratio:5.2f}x"
            out.append(line)
        refs = {
            (r.store, r.family, r.scenario): r.reference_us
            for r in rows
            if r.is_websession and r.reference_us is not None
        }
        if refs:
            out.append("  raw round trips in the same run (µs):")
            for store in NETWORK_STORES:
                for family in FAMILIES:
                    got = {sc: v for (st, fa, sc), v in refs.items() if (st, fa) == (store, family)}
                    if got:
                        names = RAW_NAMES[store]
                        detail = ", ".join(f"{names[sc]} {v:.1f}" for sc, v in got.items())
                        out.append(f"    {store:<11} {family:<10} {detail}")
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="fewer, shorter repeats (< 60 s)")
    parser.add_argument(
        "--only",
        default="",
        help="comma-separated families, implementations or stores to run "
        "(e.g. 'starlette' or 'beaker,django' or 'memory'); websession always runs",
    )
    parser.add_argument("--json", type=Path, help="also write every figure to this JSON file")
    parser.add_argument("--iterations", type=int, help="fixed iterations per repeat (smoke runs)")
    parser.add_argument("--repeats", type=int, help="repeats per measurement")
    args = parser.parse_args(argv)

    only = [o.strip() for o in args.only.split(",") if o.strip()]
    budget = Budget(repeats=5, target_seconds=0.012) if args.quick else Budget()
    if args.iterations is not None or args.repeats is not None:
        budget = Budget(
            repeats=args.repeats or budget.repeats,
            target_seconds=budget.target_seconds,
            iterations=args.iterations,
        )
    families = [f for f in FAMILIES if f in only] or list(FAMILIES)
    stores = [s for s in STORES if s in only] or list(STORES)
    peer_filter = [o for o in only if o not in FAMILIES and o not in STORES]

    started = time.perf_counter()
    progress = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    with tempfile.TemporaryDirectory(prefix="websession-bench-") as tmp:
        workdir = Path(tmp)
        try:
            facts = machine_facts(workdir, stores)
            print("websession benchmarks: " + ("--quick" if args.quick else "full run"))
            for key, value in facts.items():
                print(f"  {key}: {value}")
            print(
                f"  method: in-process WSGI/ASGI calls, {budget.repeats} repeats alternating with "
                "the baseline, median of per-request means"
            )
            if any(s in NETWORK_STORES for s in stores):
                net = network_budget(budget)
                print(
                    f"  network stores: {net.repeats} shorter repeats, the raw client round trips "
                    "timed in the same alternation; ratios are medians of per-repeat ratios"
                )
            from .peer_sqlite import use_wal_normal_for_sqlalchemy

            use_wal_normal_for_sqlalchemy()
            rows, missing = run_benchmarks(
                budget,
                only=peer_filter,
                families=families,
                stores=stores,
                workdir=workdir,
                progress=progress,
            )
            levels, missing_levels = store_level(budget, stores, progress)
            splits = request_split(budget, stores, workdir, progress)
            raw = raw_cookie_reference(budget)
            calls = untouched_store_calls(workdir)
        finally:
            raw_network.forget()
            problems = network.cleanup()
    for name, reason in missing.items():
        print(f"\nfamily {name} not measured: {reason}")
    print(render_tables(rows, SCENARIOS))
    print(
        "\nraw signed-cookie reference (msgspec JSON + urlsafe base64 + HMAC-SHA256, "
        f"same payload): read {raw['read']:.1f} µs, write round trip {raw['write']:.1f} µs"
    )
    network_report = render_network(rows, levels, SCENARIOS)
    if network_report:
        print(network_report)
    for kind, reason in missing_levels.items():
        print(f"\n{kind} store level not measured: {reason}")
    split_report = render_split(splits)
    if split_report:
        print(split_report)
    print(
        "\n== targets (overhead, median, same run; judged on the bare "
        + " and ".join(TARGET_FAMILIES)
        + " families) =="
    )
    checks = check_targets(rows, raw, calls, levels)
    for passed, line in checks:
        print(f"{'PASS' if passed else 'MISS'}  {line}")
    for problem in problems:
        print(f"\ncleanup: {problem}")
    elapsed = time.perf_counter() - started
    print(f"\n{len(rows) + len(levels)} measurements in {elapsed:.0f} s")
    if args.json is not None:
        args.json.write_text(
            json.dumps(
                {
                    "facts": facts,
                    "budget": asdict(budget),
                    "raw_cookie_us": raw,
                    "store_level": [asdict(level) for level in levels],
                    "request_split": [asdict(split) for split in splits],
                    "untouched_store_calls": calls,
                    "targets": [{"pass": p, "check": line} for p, line in checks],
                    "missing_families": missing,
                    "rows": [asdict(r) for r in rows],
                },
                indent=2,
            )
            + "\n",
            encoding="utf-8",
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
