"""Soak: a long replayed search under repeated faults; nothing that finished may be lost or recorded twice.

    python benchmarks/soak.py                                     # 500 trials, 5 driver kills, 2 node kills
    python benchmarks/soak.py --trials 60 --driver-kills 2 --node-kills 1 --out /tmp/soak   # a short one

A real two-node Ray cluster on 127.0.0.1 (head and worker, 2 CPUs each) runs a search of the tabular benchmark's
space with the `tabular` trainer (each trial replays its recorded learning curve) and the Pareto-aware scheduler,
3 trials at once. While it runs, the driver (`peft-search run`, then `peft-search resume`) is SIGKILLed at random
moments and resumed, and the worker node is SIGKILLed with its workers and started again. The driver's resident
memory and open files are sampled throughout. At the end every finished trial must be in Optuna and in MLflow
exactly once, with the table's numbers, no trial may be left RUNNING, and the front must be the table's answer for
the designs tried. Prints a JSON report (also written to OUT/soak.json).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import yaml

HERE = Path(__file__).parent
TABLE = HERE / "tabular" / "sst2_minilm.csv"
GRID = HERE / "tabular" / "sst2_minilm.yaml"
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

    def start(self) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        self.address = f"127.0.0.1:{port}"
        self.head = self._node("--head", f"--port={port}", "--include-dashboard=false", f"--temp-dir={self.root / 'ray'}")
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

        ray.shutdown()
        for node in (self.worker, self.head):
            if node is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(node.pid, signal.SIGKILL)
                node.wait(timeout=60)

    def _node(self, *args: str) -> subprocess.Popen:
        log = open(self.root / "nodes.log", "a")
        return subprocess.Popen([str(BIN / "ray"), "start", *args, f"--num-cpus={self.cpus}", *NODE], stdout=log,
                                stderr=log, start_new_session=True, env={**os.environ, **self.env})

    def _wait_for(self, nodes: int) -> None:
        deadline = time.time() + 120
        while self._alive() < nodes:
            if time.time() > deadline:
                raise RuntimeError(f"the cluster did not reach {nodes} nodes:\n" + (self.root / "nodes.log").read_text()[-3000:])
            time.sleep(1)

    def _alive(self) -> int:
        import ray

        try:
            if not ray.is_initialized():  # this process watches the cluster as a driver of its own
                ray.init(address=self.address, configure_logging=False, log_to_driver=False)
            return sum(node["Alive"] for node in ray.nodes())
        except Exception:  # the head is still starting
            return 0


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


def spec(root: Path, address: str, trials: int) -> dict[str, Any]:
    """The tabular benchmark's space, replayed: random designs, Pareto ASHA on the recorded rungs."""
    grid = yaml.safe_load(GRID.read_text())
    return {"name": "soak", "task": grid["task"], "sites": grid["sites"], "menus": grid["menus"],
            "trainer": "tabular", "table": str(TABLE), "sampler": "random", "scheduler": "pareto_asha",
            "asha_metric": "loss", "asha": grid["asha"], "trials": trials, "concurrency": 3, "seed": 0,
            "ray_address": address, "root": str(root), "storage": f"sqlite:///{root}/optuna.db",
            "tracking_uri": f"sqlite:///{root}/mlflow.db"}


def finished_trials(data: dict[str, Any]) -> list[Any]:
    import optuna
    from optuna.trial import TrialState

    try:
        study = optuna.load_study(study_name=data["name"], storage=data["storage"])
    except KeyError:  # not created yet
        return []
    return [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
            if "ray_trial_id" in t.user_attrs]


def soak(root: Path, trials: int, driver_kills: int, node_kills: int, seed: int = 0) -> dict[str, Any]:
    """Run the search under the faults; return what was survived and what was checked."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    root.mkdir(parents=True, exist_ok=True)
    token = root / "auth_token"  # Ray 2.60 authenticates nodes and drivers by token, as a cluster should
    token.write_text(secrets.token_hex(32))
    os.environ.update({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token), "RAY_USAGE_STATS_ENABLED": "0"})
    draw = random.Random(seed)
    kill_driver_at = sorted(draw.sample(range(trials // 10, trials * 9 // 10), driver_kills))
    kill_node_at = sorted(draw.sample(range(trials // 10, trials * 9 // 10), node_kills))
    cluster = Cluster(root)
    cluster.start()
    data = spec(root, cluster.address, trials)
    (root / "spec.yaml").write_text(yaml.safe_dump(data))
    samples, log = Samples(), open(root / "drivers.log", "a")
    survived = {"driver_kills": 0, "node_kills": 0}
    start = time.time()
    try:
        command = [str(BIN / "peft-search"), "run", str(root / "spec.yaml"), "--verbose", "0"]
        while True:
            driver = subprocess.Popen(command, stdout=log, stderr=log)
            samples.lives.append([])
            while driver.poll() is None:
                done = len(finished_trials(data))
                samples.take(driver.pid, done)
                if kill_driver_at and done >= kill_driver_at[0]:
                    kill_driver_at.pop(0)
                    driver.send_signal(signal.SIGKILL)
                    driver.wait()
                    survived["driver_kills"] += 1
                    break
                if kill_node_at and done >= kill_node_at[0]:
                    kill_node_at.pop(0)
                    cluster.kill_worker()
                    cluster.start_worker()
                    survived["node_kills"] += 1
                time.sleep(1)
            if driver.returncode not in (0, -signal.SIGKILL):
                raise RuntimeError(f"the driver failed ({driver.returncode}); see {root / 'drivers.log'}")
            if driver.returncode == 0:
                break
            command = [str(BIN / "peft-search"), "resume", "soak", "--root", str(root), "--verbose", "0"]
    finally:
        cluster.stop()
        log.close()
    return {"trials": trials, **survived, "minutes": round((time.time() - start) / 60, 1), **check(data),
            **samples.slopes()}


def check(data: dict[str, Any]) -> dict[str, Any]:
    """What the stores hold against what the table says."""
    import optuna
    from mlflow.tracking import MlflowClient
    from optuna.trial import TrialState

    from search import tabular
    from search.pareto import front

    study = optuna.load_study(study_name=data["name"], storage=data["storage"])
    finished = finished_trials(data)
    ids = [t.user_attrs["ray_trial_id"] for t in finished]
    client = MlflowClient(data["tracking_uri"])
    experiment = client.get_experiment_by_name(data["name"]).experiment_id
    runs = client.search_runs([experiment], filter_string="tags.ray_trial_id != ''", max_results=50_000)
    recorded = [r.data.tags["ray_trial_id"] for r in runs if r.info.status == "FINISHED"]
    table = tabular.load(str(TABLE))
    wrong = 0
    for run in runs:
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
            "left_running": len(study.get_trials(states=(TrialState.RUNNING,))), "wrong_histories": wrong,
            "wrong_final_metrics": int(sum(m != metric for (m, _), metric in zip(told, table_metric))),
            "front_is_the_tables": sorted(front(told)) == sorted(front([(m, b) for (_, b), m in zip(told, table_metric)]))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=500)
    parser.add_argument("--driver-kills", type=int, default=5)
    parser.add_argument("--node-kills", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0, help="draws the kill moments")
    parser.add_argument("--out", default="/tmp/peft-search-soak")
    args = parser.parse_args()
    report = soak(Path(args.out), args.trials, args.driver_kills, args.node_kills, args.seed)
    (Path(args.out) / "soak.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
