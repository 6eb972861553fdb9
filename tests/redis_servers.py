"""Private servers for the store tests: a Redis Cluster, a Redis master with a Sentinel, a
standalone Redis a test may kill and restart, and memcached.

A pytest plugin: test modules load it with ``pytest_plugins = ["redis_servers"]``. Each server
runs from a temporary directory of pytest's on a spare loopback port, keeps nothing on disk
(``--save '' --appendonly no``) and is stopped when its fixture ends. The shared server on port
6379 is never touched here. Without the ``redis-server`` / ``redis-cli`` binaries the fixtures
skip, naming what is missing, except under CI (``CI=true``), where that is a failure. Under CI a
missing ``memcached`` is installed with apt-get first.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

try:
    from redis import RedisError

    _NOT_YET: tuple[type[BaseException], ...] = (OSError, RedisError)
except ImportError:  # the memcached tests need no redis-py
    _NOT_YET = (OSError,)

__all__ = [
    "ServerProcess",
    "require_binary",
    "spare_port",
    "wait_for",
]

#: How long a server may take to start or a cluster to agree, before the fixture gives up.
START_TIMEOUT = 15.0
SENTINEL_SERVICE = "websession-test"


def require_binary(name: str, install_hint: str) -> str:
    """The path of ``name``; skips the test (fails it under CI) when it is not installed."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed ({install_hint}); the tests that need it cannot run"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


def _free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def spare_port(*, bus_offset: int | None = None) -> int:
    """A loopback port nothing listens on (and ``port + bus_offset`` too, when given).

    Redis Cluster also listens on its bus port, 10000 above the client port.
    """
    for _ in range(200):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port: int = probe.getsockname()[1]
        if bus_offset is None:
            return port
        if port + bus_offset < 65536 and _free(port + bus_offset):
            return port
    raise RuntimeError("no spare loopback port pair found")


def wait_for(what: str, check: Callable[[], bool], timeout: float = START_TIMEOUT) -> None:
    """Call ``check()`` until it returns true; fail after ``timeout`` seconds.

    Connection errors (and redis-py's errors, e.g. LOADING) count as "not yet".
    """
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except _NOT_YET as exc:
            last = exc
        time.sleep(0.05)
    raise RuntimeError(f"{what} was not ready after {timeout} s (last error: {last!r})")


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.2)
        return probe.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class ServerProcess:
    """One server process: started, killed (SIGKILL) and started again with the same arguments."""

    args: list[str]
    port: int
    log: Path
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                self.args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        wait_for(f"{self.args[0]} on port {self.port}", self._up)

    def _up(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(
                f"{self.args[0]} exited with {self.process.returncode}: "
                f"{self.log.read_text(errors='replace')[-2000:]}"
            )
        return _listening(self.port)

    def kill(self) -> None:
        """SIGKILL, as a crash would: no shutdown, no goodbye to clients."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)
        wait_for(f"port {self.port} to close", lambda: not _listening(self.port))

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)


def _redis_args(port: int, directory: Path, *extra: str) -> list[str]:
    return [
        require_binary("redis-server", "apt-get install redis-server"),
        "--port", str(port),
        "--bind", "127.0.0.1",
        "--save", "",
        "--appendonly", "no",
        "--dir", str(directory),
        "--daemonize", "no",
        *extra,
    ]  # fmt: skip


def _ping(port: int) -> bool:
    import redis

    with redis.Redis(port=port, socket_timeout=1, socket_connect_timeout=1) as client:
        return bool(client.ping())


@dataclass
class RedisCluster:
    """A running 3-master cluster: ``url`` is its ``redis+cluster://`` URL."""

    ports: list[int]
    url: str


@dataclass
class RedisSentinel:
    """A running master with one Sentinel watching it as ``service``."""

    master_port: int
    sentinel_port: int
    service: str
    url: str


@dataclass
class KillableRedis:
    """A standalone server of one test's own, which the test may kill and start again."""

    server: ServerProcess
    url: str

    def kill(self) -> None:
        self.server.kill()

    def restart(self) -> None:
        self.server.start()
        wait_for("redis to answer PING", lambda: _ping(self.server.port))


@contextlib.contextmanager
def _running(servers: list[ServerProcess]) -> Iterator[None]:
    try:
        yield
    finally:
        for server in servers:
            server.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    """Three masters, no replicas, all 16384 slots covered; stopped at the end of the run."""
    cli = require_binary("redis-cli", "apt-get install redis-tools")
    import redis

    directory = tmp_path_factory.mktemp("redis-cluster")
    ports: list[int] = []
    servers: list[ServerProcess] = []
    with _running(servers):
        for _ in range(3):
            port = spare_port(bus_offset=10000)
            while port in ports:
                port = spare_port(bus_offset=10000)
            ports.append(port)
            args = _redis_args(
                port, directory,
                "--cluster-enabled", "yes",
                "--cluster-config-file", f"nodes-{port}.conf",
                "--cluster-node-timeout", "5000",
            )  # fmt: skip
            server = ServerProcess(args, port, directory / f"redis-{port}.log")
            servers.append(server)
            server.start()
        addresses = [f"127.0.0.1:{port}" for port in ports]
        create = [
            cli,
            "--cluster",
            "create",
            *addresses,
            "--cluster-replicas",
            "0",
            "--cluster-yes",
        ]
        created = subprocess.run(create, capture_output=True, timeout=60, check=False)
        if created.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed: {created.stdout!r}")

        def agreed() -> bool:
            for port in ports:
                with redis.Redis(port=port, socket_timeout=1) as client:
                    info = client.cluster("INFO")
                if info.get("cluster_state") != "ok" or int(info["cluster_known_nodes"]) != 3:
                    return False
            return True

        wait_for("the cluster to reach cluster_state:ok", agreed)
        nodes = ",".join(f"127.0.0.1:{port}" for port in ports)
        yield RedisCluster(ports, f"redis+cluster://{nodes}")


@pytest.fixture(scope="session")
def redis_sentinel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisSentinel]:
    """A master and one Sentinel that watches it; stopped at the end of the run."""
    import redis

    directory = tmp_path_factory.mktemp("redis-sentinel")
    servers: list[ServerProcess] = []
    with _running(servers):
        master_port = spare_port()
        master = ServerProcess(
            _redis_args(master_port, directory), master_port, directory / "master.log"
        )
        servers.append(master)
        master.start()
        sentinel_port = spare_port()
        config = directory / "sentinel.conf"
        # Sentinel rewrites its own config file, so it lives in the temporary directory.
        config.write_text(
            f"port {sentinel_port}\n"
            "bind 127.0.0.1\n"
            f"dir {directory}\n"
            f"sentinel monitor {SENTINEL_SERVICE} 127.0.0.1 {master_port} 1\n"
            f"sentinel down-after-milliseconds {SENTINEL_SERVICE} 60000\n"
        )
        sentinel = ServerProcess(
            [require_binary("redis-server", "apt-get install redis-server"), str(config),
             "--sentinel"],
            sentinel_port,
            directory / "sentinel.log",
        )  # fmt: skip
        servers.append(sentinel)
        sentinel.start()

        def knows_master() -> bool:
            with redis.Redis(port=sentinel_port, socket_timeout=1) as client:
                address = client.execute_command(
                    "SENTINEL GET-MASTER-ADDR-BY-NAME", SENTINEL_SERVICE
                )
            return bool(address) and int(address[1]) == master_port

        wait_for("the Sentinel to know the master", knows_master)
        url = f"redis+sentinel://127.0.0.1:{sentinel_port}/{SENTINEL_SERVICE}"
        yield RedisSentinel(master_port, sentinel_port, SENTINEL_SERVICE, url)


@pytest.fixture
def killable_redis(tmp_path: Path) -> Iterator[KillableRedis]:
    """A standalone server of this test's own (not the shared one), stopped afterwards."""
    port = spare_port()
    server = ServerProcess(_redis_args(port, tmp_path), port, tmp_path / "redis.log")
    with _running([server]):
        server.start()
        wait_for("redis to answer PING", lambda: _ping(port))
        yield KillableRedis(server, f"redis://127.0.0.1:{port}/0")


@dataclass
class Memcached:
    """A running memcached of the test run's own."""

    server: ServerProcess
    url: str

    @property
    def port(self) -> int:
        return self.server.port


def _memcached_binary() -> str:
    if shutil.which("memcached") is None and os.environ.get("CI") == "true":
        install = ["apt-get", "install", "-y", "-q", "memcached"]
        if subprocess.run(install, capture_output=True, timeout=300, check=False).returncode:
            subprocess.run(
                ["apt-get", "update", "-q"], capture_output=True, timeout=300, check=False
            )
            subprocess.run(install, capture_output=True, timeout=300, check=False)
    return require_binary("memcached", "apt-get install memcached")


def start_memcached(directory: Path) -> ServerProcess:
    """memcached on a spare loopback port, TCP only, 64 MB; the caller stops it."""
    port = spare_port()
    args = [_memcached_binary(), "-l", "127.0.0.1", "-p", str(port), "-U", "0", "-m", "64"]
    if os.geteuid() == 0:
        args += ["-u", "root"]  # memcached refuses to run as root unless told which user
    server = ServerProcess(args, port, directory / f"memcached-{port}.log")
    server.start()
    return server


@pytest.fixture(scope="session")
def memcached_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Memcached]:
    """A memcached shared by the run's tests (each test uses prefixes of its own)."""
    server = start_memcached(tmp_path_factory.mktemp("memcached"))
    with _running([server]):
        yield Memcached(server, f"memcached://127.0.0.1:{server.port}")
