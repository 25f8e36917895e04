"""Soak: long replayed searches under repeated faults; nothing that finished may be lost or recorded twice.

    python -m benchmarks.soak                                     # 500 trials, 5 driver kills, 2 node kills
    python -m benchmarks.soak --searches 2 --postgres             # two searches sharing a PostgreSQL server
    python -m benchmarks.soak --trials 60 --driver-kills 2 --node-kills 1 --out /tmp/soak   # a short one

A real two-node Ray cluster on 127.0.0.1 (head and worker, 2 CPUs each) runs searches of the tabular benchmark's
space with the `tabular` trainer (each trial replays its recorded learning curve) and the Pareto-aware scheduler,
3 trials at once each. Their stores are SQLite files, or (``--postgres``) a PostgreSQL server of Debian's package
started for the soak, whose password reaches the drivers only through a libpq password file. While they run, each
driver (`peft-search run`, then `peft-search resume`) is SIGKILLed at random moments and resumed, and the worker
node is SIGKILLed with its workers and started again. The drivers' resident memory and open files are sampled
throughout. At the end every finished trial must be in Optuna and in MLflow exactly once, with its params and the
table's numbers, no trial may be left RUNNING, the front must be the table's answer for the designs tried, and the
password must be in no file but its own. Prints a JSON report (also written to OUT/soak.json).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import random
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import yaml

from peft_search.testing import Cluster, Postgres

HERE = Path(__file__).parent
TABLE = HERE / "tabular" / "sst2_minilm.csv"
GRID = HERE / "tabular" / "sst2_minilm.yaml"
BIN = Path(sys.executable).parent
STALL_MINUTES = 10  # no trial finished in any search for this long: the soak failed (a hung driver), say so


@dataclass
class Samples:
    """The driver's resident memory (MB) and open files, against finished trials, per driver life."""

    lives: list[list[tuple[int, float, int]]] = field(default_factory=list)

    def take(self, pid: int, finished: int) -> None:
        with contextlib.suppress(psutil.Error):
            process = psutil.Process(pid)
            self.lives[-1].append((finished, process.memory_info().rss / 2**20, process.num_fds()))

    def slopes(self) -> dict[str, float]:
        """The steepest per-life growth of memory (MB) and open files per 100 finished trials (lives long enough
        to fit a line)."""
        rss, fds = [0.0], [0.0]
        for life in self.lives:
            points = np.array(life[len(life) // 4:])  # past the driver's start-up
            if len(points) >= 5 and np.ptp(points[:, 0]) >= 20:
                rss.append(100 * np.polyfit(points[:, 0], points[:, 1], 1)[0])
                fds.append(100 * np.polyfit(points[:, 0], points[:, 2], 1)[0])
        return {"rss_mb_per_100_trials": max(rss), "open_files_per_100_trials": max(fds)}


def spec(root: Path, address: str, trials: int, name: str, postgres: Postgres | None) -> dict[str, Any]:
    """The tabular benchmark's space, replayed: random designs, Pareto ASHA on the recorded rungs."""
    grid = yaml.safe_load(GRID.read_text())
    stores = ({"storage": postgres.url("optuna"), "tracking_uri": postgres.url("mlflow")} if postgres else
              {"storage": f"sqlite:///{root}/optuna.db", "tracking_uri": f"sqlite:///{root}/mlflow.db"})
    return {"name": name, "task": grid["task"], "sites": grid["sites"], "menus": grid["menus"],
            "trainer": "tabular", "table": str(TABLE), "sampler": "random", "scheduler": "pareto_asha",
            "asha_metric": "loss", "asha": grid["asha"], "trials": trials, "concurrency": 3, "seed": 0,
            "ray_address": address, "root": str(root), **stores}


def finished_trials(data: dict[str, Any]) -> list[Any]:
    import optuna
    from optuna.trial import TrialState

    try:
        study = optuna.load_study(study_name=data["name"], storage=_reader(data["storage"]))
    except KeyError:  # not created yet
        return []
    return [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
            if "ray_trial_id" in t.user_attrs]


@functools.cache
def _reader(url: str) -> Any:
    """The soak's storage for polling, opened once under the drivers' schema lock (the first to open a new store,
    SQLite or PostgreSQL, creates its schema; on PostgreSQL the lock is a connection of its own, not one per poll)."""
    from search.stores import open_storage, schema_lock

    with schema_lock(url):
        return open_storage(url)


@dataclass
class Search:
    """One search of the soak: its driver (``peft-search run``, after a kill ``peft-search resume``), killed when
    its finished trials reach each of ``kill_at``."""

    data: dict[str, Any]
    kill_at: list[int]
    samples: Samples = field(default_factory=Samples)
    driver: subprocess.Popen | None = None
    finished: int = 0
    kills: int = 0
    done: bool = False

    def poll(self, env: dict[str, str], log: Any) -> None:
        """Start or resume the driver if none runs, sample it, and kill it at the next moment due."""
        if self.driver is not None and self.driver.poll() is not None:
            if self.driver.returncode not in (0, -signal.SIGKILL):
                log.flush()
                raise RuntimeError(f"the driver of {self.data['name']} failed ({self.driver.returncode}); the end of "
                                   f"{log.name}:\n{Path(log.name).read_text()[-4000:]}")  # CI keeps no files
            self.done = self.driver.returncode == 0
        if self.done:
            return
        if self.driver is None or self.driver.returncode is not None:
            root = self.data["root"]
            command = (["run", f"{root}/{self.data['name']}.yaml"] if self.driver is None else
                       ["resume", self.data["name"], "--root", root])
            self.driver = subprocess.Popen([str(BIN / "peft-search"), *command, "--verbose", "0"], stdout=log,
                                           stderr=log, env=env)
            self.samples.lives.append([])
        self.finished = len(finished_trials(self.data))
        self.samples.take(self.driver.pid, self.finished)
        if self.kill_at and self.finished >= self.kill_at[0]:
            self.kill_at.pop(0)
            self.driver.send_signal(signal.SIGKILL)
            self.driver.wait()
            self.kills += 1


def moments(draw: random.Random, trials: int, kills: int) -> list[int]:
    """When to kill: finished-trial counts drawn from the middle 80% of the run."""
    return sorted(draw.sample(range(trials // 10, trials * 9 // 10), kills))


def soak(root: Path, trials: int, driver_kills: int, node_kills: int, seed: int = 0, searches: int = 1,
         postgres: bool = False, cluster: Cluster | None = None) -> dict[str, Any]:
    """Run ``searches`` searches of ``trials`` each, sharing their stores (SQLite files, or a PostgreSQL server
    started for the soak) and a Ray cluster (``cluster``, else one started here), under the faults: each driver
    killed ``driver_kills`` times, the worker node ``node_kills`` times. Return what was survived and checked."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    root.mkdir(parents=True, exist_ok=True)
    draw = random.Random(seed)
    own_cluster = cluster is None
    if own_cluster:
        token = root / "auth_token"  # Ray 2.60 authenticates nodes and drivers by token, as a cluster should
        token.write_text(secrets.token_hex(32))
        os.environ.update({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token), "RAY_USAGE_STATS_ENABLED": "0"})
        cluster = Cluster(root)
        cluster.start()
    server = Postgres(root / "postgres") if postgres else None
    runs, kill_node_at, log = [], moments(draw, trials * searches, node_kills), open(root / "drivers.log", "a")
    connections = 0
    start = time.time()
    try:
        if server:
            server.start()
            os.environ.update(server.env)  # this process reads the stores too
        for k in range(searches):
            data = spec(root, cluster.address, trials, f"soak{k}", server)
            (root / f"{data['name']}.yaml").write_text(yaml.safe_dump(data))
            runs.append(Search(data, moments(draw, trials, driver_kills)))
        env = {**os.environ, **cluster.env}
        progress = (0, time.time())  # trials finished over all searches, and when that count last grew
        while not all(run.done for run in runs):
            for run in runs:
                run.poll(env, log)
            progress = _stalled(progress, sum(run.finished for run in runs), log)
            if kill_node_at and sum(run.finished for run in runs) >= kill_node_at[0]:
                kill_node_at.pop(0)
                cluster.kill_worker()
                cluster.start_worker()
            connections = max(connections, server.connections()) if server else 0
            time.sleep(1)
        minutes = round((time.time() - start) / 60, 1)
        checks = [check(run.data) for run in runs]
        seen = password_seen(root, server, cluster.temp_dir) if server else None
    finally:
        for run in runs:
            if run.driver is not None and run.driver.poll() is None:
                run.driver.kill()
        if own_cluster:
            cluster.stop()
        if server:
            server.stop()
            os.environ.pop("PGPASSFILE", None)
        log.close()
    slopes = [run.samples.slopes() for run in runs]
    return {"searches": searches, "trials": trials, "store": "postgresql" if server else "sqlite",
            "driver_kills": sum(run.kills for run in runs), "node_kills": node_kills - len(kill_node_at),
            "minutes": minutes, **{key: _total([c[key] for c in checks]) for key in checks[0]},
            **({"password_seen_in": seen, "most_connections": connections} if server else {}),
            **{key: max(s[key] for s in slopes) for key in slopes[0]}}


def _stalled(progress: tuple[int, float], finished: int, log: Any) -> tuple[int, float]:
    """The new (finished, since), or a RuntimeError with the drivers' log if nothing finished for STALL_MINUTES."""
    if finished > progress[0]:
        return finished, time.time()
    if time.time() - progress[1] > STALL_MINUTES * 60:
        log.flush()
        raise RuntimeError(f"no trial finished in {STALL_MINUTES} minutes ({finished} so far); the end of "
                           f"{log.name}:\n{Path(log.name).read_text()[-4000:]}")
    return progress


def _total(values: list[Any]) -> Any:
    return all(values) if isinstance(values[0], bool) else sum(values)


def password_seen(root: Path, server: Postgres, ray_dir: Path) -> list[str]:
    """Every file that holds the store's password in clear: what the searches wrote (saved specs, Ray's
    experiment state and logs, artifacts, the drivers' output), a dump of both databases (every Optuna and MLflow
    record), and the password file itself, the one place it belongs (so the scan is seen to find it)."""
    for database in ("optuna", "mlflow"):
        subprocess.run([str(server.bin("pg_dump")), "-h", "127.0.0.1", "-p", str(server.port), "-U", server.user,
                        "-f", str(root / f"dump-{database}.sql"), database], check=True, env={**os.environ, **server.env})
    secret = server.password.encode()
    files = {p for folder in (root, ray_dir) for p in folder.rglob("*") if p.is_file()}
    return sorted(str(p) for p in files if secret in p.read_bytes())


def check(data: dict[str, Any]) -> dict[str, Any]:
    """What the stores hold against what the table says."""
    import optuna
    from mlflow.tracking import MlflowClient
    from optuna.trial import TrialState

    from search import tabular
    from search.pareto import front

    study = optuna.load_study(study_name=data["name"], storage=_reader(data["storage"]))
    finished = finished_trials(data)
    ids = [t.user_attrs["ray_trial_id"] for t in finished]
    client = MlflowClient(data["tracking_uri"])
    experiment = client.get_experiment_by_name(data["name"]).experiment_id
    runs = client.search_runs([experiment], filter_string="tags.ray_trial_id != ''", max_results=50_000)
    recorded = [r.data.tags["ray_trial_id"] for r in runs if r.info.status == "FINISHED"]
    table = tabular.load(str(TABLE))
    wrong, bare = 0, [run for run in runs if "seed" not in run.data.params]
    for run in runs:
        if run in bare:
            continue
        curve = tabular.curve(table, run.data.tags["design_id"], int(run.data.params["seed"]))
        history = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "accuracy")}
        expected = dict(zip(curve["step"], curve["valid_metric"]))
        wrong += any(expected.get(step) != value for step, value in history.items())
    complete = [t for t in finished if t.state == TrialState.COMPLETE]
    table_metric = [tabular.curve(table, t.user_attrs["design_id"], data["seed"])["valid_metric"].iloc[-1]
                    for t in complete]
    told = [tuple(t.values) for t in complete]
    errored = [t for t in study.get_trials(states=(TrialState.FAIL,)) if "error" in t.user_attrs]
    return {"finished": len(finished), "errored": len(errored), "optuna_duplicates": len(ids) - len(set(ids)),
            "mlflow_records": len(recorded), "mlflow_duplicates": len(recorded) - len(set(recorded)),
            "lost": len(set(ids) - set(recorded)), "records_not_in_optuna": len(set(recorded) - set(ids)),
            "left_running": len(study.get_trials(states=(TrialState.RUNNING,))), "records_without_params": len(bare),
            "wrong_histories": wrong,
            "wrong_final_metrics": int(sum(m != metric for (m, _), metric in zip(told, table_metric))),
            "front_is_the_tables": sorted(front(told)) == sorted(front([(m, b) for (_, b), m in zip(told, table_metric)]))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=500, help="per search")
    parser.add_argument("--driver-kills", type=int, default=5, help="per search")
    parser.add_argument("--node-kills", type=int, default=2)
    parser.add_argument("--searches", type=int, default=1, help="searches at once, sharing the stores")
    parser.add_argument("--postgres", action="store_true", help="stores on a PostgreSQL server started for the soak")
    parser.add_argument("--seed", type=int, default=0, help="draws the kill moments")
    parser.add_argument("--out", default="/tmp/peft-search-soak")
    args = parser.parse_args()
    report = soak(Path(args.out), args.trials, args.driver_kills, args.node_kills, args.seed, args.searches,
                  args.postgres)
    (Path(args.out) / "soak.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
