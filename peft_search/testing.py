"""What the tests and the benchmarks share to run peft-search for real on one machine, as ``ray.cluster_utils``
or ``optuna.testing`` do for theirs: a multi-node Ray cluster on 127.0.0.1 whose worker node can be killed and
started again (``Cluster``), and a PostgreSQL server with its own data directory (``Postgres``).

Both start real processes (``ray start``; Debian's ``initdb``/``pg_ctl``) and clean up after themselves."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

BIN = Path(sys.executable).parent
NODE = ["--node-ip-address=127.0.0.1", "--disable-usage-stats", "--block"]


@dataclass
class Cluster:
    """A head and a worker node started with ``ray start`` on 127.0.0.1 (also the tests' shared cluster,
    ``tests/conftest.py``); the worker can be killed and started again. This process joins as a driver."""

    root: Path
    cpus: int = 2  # per node
    env: dict[str, str] = field(default_factory=dict)  # for the nodes' processes, e.g. PYTHONPATH of plugin modules
    address: str = ""
    head: subprocess.Popen | None = None
    worker: subprocess.Popen | None = None
    # Ray's state and logs. Short and outside ``root``: Ray's socket paths under it must fit AF_UNIX's 107 bytes,
    # which a pytest folder (more so an xdist worker's) can exceed. Removed by ``stop``.
    temp_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="ray-")))

    def start(self) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        self.address = f"127.0.0.1:{port}"
        self.head = self._node("--head", f"--port={port}", "--include-dashboard=false", f"--temp-dir={self.temp_dir}")
        self._wait_for(1)
        self.start_worker()

    def start_worker(self) -> None:
        self.worker = self._node(f"--address={self.address}")
        self._wait_for(2)

    def kill_worker(self) -> None:
        """The worker's raylet and every process it started, with no goodbye."""
        os.killpg(self.worker.pid, signal.SIGKILL)
        self.worker.wait()

    def stop(self) -> None:
        import ray

        if self._driving():  # and not another cluster this process drives (the tests' shared one)
            ray.shutdown()
        for node in (self.worker, self.head):
            if node is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(node.pid, signal.SIGKILL)
                node.wait(timeout=60)
        shutil.rmtree(self.temp_dir, ignore_errors=True)

    def _node(self, *args: str) -> subprocess.Popen:
        log = open(self.root / "nodes.log", "a")
        return subprocess.Popen([str(BIN / "ray"), "start", *args, f"--num-cpus={self.cpus}", *NODE], stdout=log,
                                stderr=log, start_new_session=True, env={**os.environ, **self.env})

    def _wait_for(self, nodes: int) -> None:
        deadline = time.time() + 120
        while True:
            # A node that exited will not come: say why now.
            exited = any(node is not None and node.poll() is not None for node in (self.head, self.worker))
            if not exited and self._alive() >= nodes:
                return
            if exited or time.time() > deadline:
                why = "a node exited" if exited else "timed out"
                raise RuntimeError(f"the cluster did not reach {nodes} nodes ({why}):\n"
                                   + (self.root / "nodes.log").read_text()[-3000:])
            time.sleep(1)

    def _alive(self) -> int:
        import ray

        try:
            if not ray.is_initialized():  # this process watches the cluster as a driver of its own
                host, port = self.address.split(":")
                # ray.init waits minutes for a head that is not there: join only once its GCS port answers.
                socket.create_connection((host, int(port)), timeout=1).close()
                ray.init(address=self.address, configure_logging=False, log_to_driver=False)
            return sum(node["Alive"] for node in ray.nodes()) if self._driving() else 0
        except Exception:  # the head is still starting
            return 0

    def _driving(self) -> bool:
        """Whether this process is a driver of this cluster, not of another one (the GCS names itself by the
        host's IP, not 127.0.0.1: compare ports)."""
        import ray

        port = self.address.rsplit(":", 1)[-1]
        return ray.is_initialized() and ray.get_runtime_context().gcs_address.rsplit(":", 1)[-1] == port


@dataclass
class Postgres:
    """A PostgreSQL server of Debian's package on 127.0.0.1 with its own data directory and two databases
    (``optuna``, ``mlflow``): Optuna and MLflow each migrate a schema with an ``alembic_version`` table of its
    own. The role's password lives in a libpq password file (``PGPASSFILE``), never in a URL."""

    root: Path
    user: str = "peft"
    port: int = 0
    password: str = field(default_factory=lambda: secrets.token_hex(16))
    data: Path | None = None

    @property
    def passfile(self) -> Path:
        return self.root / "pgpass"

    @property
    def env(self) -> dict[str, str]:
        """What a driver needs in its environment to log in."""
        return {"PGPASSFILE": str(self.passfile)}

    def url(self, database: str) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        # The server refuses to run as root: as root it runs as Debian's `postgres` user, in a folder that user
        # can enter (pytest's temporary folders are private to root).
        self.data = Path(tempfile.mkdtemp(prefix="peft-search-pg-"))
        password_file = self.data / "password"
        password_file.write_text(self.password)
        if os.geteuid() == 0:
            shutil.chown(self.data, "postgres")
            shutil.chown(password_file, "postgres")
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self._server("initdb", "-D", str(self.data / "db"), "-U", self.user, f"--pwfile={password_file}",
                     "--auth=scram-sha-256", "-E", "UTF8")
        password_file.unlink()
        self._server("pg_ctl", "-D", str(self.data / "db"), "-l", str(self.data / "server.log"), "-w", "start",
                     "-o", f"-h 127.0.0.1 -p {self.port} -k {self.data}")
        self.passfile.write_text(f"127.0.0.1:{self.port}:*:{self.user}:{self.password}\n")
        self.passfile.chmod(0o600)
        for database in ("optuna", "mlflow"):
            subprocess.run([str(self.bin("createdb")), "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user,
                            database], check=True, env={**os.environ, **self.env}, capture_output=True)

    def connections(self) -> int:
        """Client connections open on the server now (PostgreSQL allows 100 by default)."""
        import sqlalchemy
        from sqlalchemy.pool import NullPool

        engine = sqlalchemy.create_engine(self.url("optuna"), poolclass=NullPool)  # its one connection closes after
        with engine.connect() as db:
            return db.execute(sqlalchemy.text(
                "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'")).scalar()

    def stop(self) -> None:
        if self.data is not None:
            self._server("pg_ctl", "-D", str(self.data / "db"), "-m", "immediate", "stop")
            shutil.rmtree(self.data, ignore_errors=True)

    def _server(self, program: str, *args: str) -> None:
        as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        out = subprocess.run([*as_postgres, str(self.bin(program)), *args], capture_output=True, text=True)
        if out.returncode != 0:
            raise RuntimeError(f"{program} failed:\n{out.stdout[-2000:]}{out.stderr[-2000:]}")

    @staticmethod
    def bin(program: str) -> Path:
        """Debian keeps the server's programs under /usr/lib/postgresql/VERSION/bin, off the PATH."""
        found = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{program}")) or [Path(shutil.which(program) or program)]
        return found[-1]
