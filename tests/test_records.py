"""What a search leaves in MLflow, read back: records, plots, dashboards, reproduction, export and the UI.

One real search (``peft-search run --smoke --set confirm_seeds=1``: MiniLM on the shipped SST-2, 4 trials of 4
steps, the front re-trained with one more seed) on the shared two-node Ray cluster feeds every test here."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

import dashboards
import trainers
from search.reproduce import recorded_inputs

CLI = [str(Path(sys.executable).parent / "peft-search")]
NAME = "default-smoke"


@pytest.fixture(scope="module")
def smoke(tmp_path_factory, ray_cluster):
    root = tmp_path_factory.mktemp("smoke")
    tracking = f"sqlite:///{root}/mlflow.db"
    out = subprocess.run([*CLI, "run", "--smoke", "--set", "confirm_seeds=1", "--address", ray_cluster, "--verbose", "0",
                          "--root", str(root),
                          "--storage", f"sqlite:///{root}/optuna.db", "--tracking-uri", tracking],
                         capture_output=True, text=True, timeout=600, env={**os.environ, "COLUMNS": "200"})  # no folds
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    client = MlflowClient(tracking)
    experiment = client.get_experiment_by_name(NAME).experiment_id
    runs = client.search_runs([experiment], filter_string="tags.ray_trial_id != ''")
    parent = client.search_runs([experiment], filter_string=f"tags.`peft_search.search` = '{NAME}'")[0]
    confirmations = [r for r in runs if r.data.tags["confirmation"] == "true"]
    return {"root": root, "tracking": tracking, "client": client, "parent": parent, "stdout": out.stdout,
            "runs": [r for r in runs if r not in confirmations], "confirmations": confirmations}


def test_the_smoke_profile_prints_the_front_and_pareto_reads_it_back(smoke):
    shown = subprocess.run([*CLI, "pareto", NAME, "--root", str(smoke["root"]), "--json"],
                           capture_output=True, text=True, timeout=120)
    summary = json.loads(shown.stdout)
    assert summary["metric"] == "accuracy" and summary["counts"]["completed"] + summary["counts"]["stopped"] == 4
    assert all(0.0 <= row["metric"] <= 1.0 for row in summary["rows"])
    front = [row for row in summary["rows"] if row["on_front"]]
    assert front and f"{NAME}: Pareto front" in smoke["stdout"]
    assert all(f"trial {row['trial']}:" in smoke["stdout"] and row["design"] in smoke["stdout"] for row in front)
    sampled = {r.data.tags["optuna_trial"]: float(r.data.params["lr"]) for r in smoke["runs"]}
    assert all(row["train"] == {"lr": pytest.approx(sampled[str(row["trial"])])} for row in summary["rows"])
    assert "hyper-parameters" in smoke["stdout"] and "lr=" in smoke["stdout"]  # the front table shows them


def test_each_trial_run_holds_its_design_hyper_parameters_history_and_outcome(smoke):
    runs = smoke["runs"]
    assert len(runs) == 4 and all(r.data.tags["mlflow.parentRunId"] == smoke["parent"].info.run_id for r in runs)
    assert len({r.data.params["lr"] for r in runs}) == 4  # sampled per trial (default.yaml: search_train)
    for run in runs:
        params, tags = run.data.params, run.data.tags
        assert {"attn.form", "ffn.form", "task", "model", "seed", "lr", "threads", "data", "version.torch"} <= set(params)
        assert params["threads"] == "1" and (Path(params["data"]) / "sst2" / "train.tsv").is_file()
        assert "train.lr" not in params and 1e-4 <= float(params["lr"]) <= 1e-2  # searched: one name, its own
        assert tags["status"] in ("completed", "stopped") and tags["pareto"] in ("true", "false") and tags["design_id"]
        history = smoke["client"].get_metric_history(run.info.run_id, "accuracy")
        assert [m.step for m in history] == ([2, 4] if tags["status"] == "completed" else [2])
        files = {a.path for a in smoke["client"].list_artifacts(run.info.run_id)}
        assert "design.json" in files and ("modification" in files) == (tags["pareto"] == "true")
        if tags["status"] == "completed":
            assert {"budget_analytic", "budget_pct_actual", "train_seconds", "examples_per_second"} <= set(run.data.metrics)


def test_the_parent_run_carries_a_self_contained_pareto_plot_and_the_front(smoke, tmp_path):
    client, parent = smoke["client"], smoke["parent"].info.run_id
    folder = Path(client.download_artifacts(parent, "pareto", str(tmp_path)))
    assert {"pareto.html", "pareto.png", "trials.csv", "importance.csv", "summary.json"} <= {p.name for p in folder.iterdir()}
    page = (folder / "pareto.html").read_text()
    assert "<svg" in page and "<script" not in page and len(page) < 1_000_000  # small: MLflow's viewer shows it
    tips = re.findall(r"<title>(trial \d+) ·", page)  # hovering any point names its trial
    assert sorted(tips) == sorted(f"trial {r['trial']}" for r in json.loads((folder / "summary.json").read_text())["rows"]
                                  + json.loads((folder / "summary.json").read_text())["stopped"])
    assert (folder / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    front = {r.data.tags["optuna_trial"] for r in smoke["runs"] if r.data.tags["pareto"] == "true"}
    summary = json.loads((folder / "summary.json").read_text())
    assert front == {str(r["trial"]) for r in summary["rows"] if r["on_front"]}
    assert smoke["parent"].data.metrics["hypervolume"] == pytest.approx(summary["hypervolume"])


def test_confirmation_runs_are_named_and_linked_to_the_trial_they_confirm(smoke):
    by_id = {r.info.run_id: r for r in smoke["runs"]}
    front = [r for r in smoke["runs"] if r.data.tags["pareto"] == "true"]
    assert front and len(smoke["confirmations"]) == len(front)  # confirm_seeds=1: one more seed per front trial
    for confirmation in smoke["confirmations"]:
        original = by_id[confirmation.data.tags["peft_search.confirms"]]
        seed = confirmation.data.params["seed"]
        assert seed != original.data.params["seed"]
        assert confirmation.data.params["lr"] == original.data.params["lr"]  # the configuration, not the spec's lr
        assert confirmation.info.run_name == f"{original.info.run_name}-confirm-seed{seed}"
        assert original.info.run_name in confirmation.data.tags["mlflow.note.content"]
        assert confirmation.data.tags["optuna_trial"] == original.data.tags["optuna_trial"]
    names = [r.info.run_name for r in [*smoke["runs"], *smoke["confirmations"]]]
    assert len(set(names)) == len(names)


def _seconds(run) -> float:
    return (run.info.end_time - run.info.start_time) / 1000


def test_a_run_lasts_from_its_trial_s_start_to_its_end(smoke):
    """MLflow's Duration is end − start: the run starts when Ray starts the trial (before its model loads), not
    when the record is written, and ends when the trial ends."""
    for run in (r for r in [*smoke["runs"], *smoke["confirmations"]] if r.data.tags["status"] == "completed"):
        trained = run.data.metrics["seconds"]  # the trainable's wall time, model loading included
        assert trained - 0.05 <= _seconds(run) <= trained + 30, (run.info.run_name, trained, _seconds(run))


def test_dashboards_rebuild_the_front_and_table_6_from_mlflow_alone(smoke):
    full = dashboards.trials(smoke["tracking"], NAME)
    frame = full[~full.confirmation]
    assert len(frame) == 4 and len(full) == 4 + len(smoke["confirmations"]) and full.attrs["metric"] == "accuracy"
    recorded = {r.info.run_id: r.data.metrics.get("test_accuracy") for r in smoke["runs"]}  # final reports only
    completed = frame[frame.status == "completed"]
    assert list(completed.test) == [recorded[run] for run in completed.run_id] and frame.test.notna().sum() == len(completed)
    assert (0 < completed.test_se).all() and (completed.test_se < 0.2).all()  # 32 test sentences: se ≤ 0.09
    rebuilt = set(dashboards.front(full).run_id)  # confirmed trials at their median over seeds, as the search chose
    assert rebuilt == {r.info.run_id for r in smoke["runs"] if r.data.tags["pareto"] == "true"}
    table = dashboards.table6(full)
    assert list(table.columns) == ["method", "params_pct", "metric", "runs", "on_front"]
    assert table.params_pct.is_monotonic_increasing and table.on_front.any()
    both = dashboards.compare(smoke["tracking"], [NAME, NAME])
    assert len(both) == 2 * len(rebuilt)
    shown = subprocess.run([*CLI, "table", NAME, "--tracking-uri", smoke["tracking"]], capture_output=True,
                           text=True, timeout=120)
    assert shown.returncode == 0 and "# params (%)" in shown.stdout and "*" in shown.stdout


def _front_run(smoke):
    return next(r for r in smoke["runs"] if r.data.tags["pareto"] == "true")


def test_reproduce_re_trains_a_trial_to_the_same_numbers_and_another_seed_differs(smoke):
    run = _front_run(smoke)
    out = subprocess.run([*CLI, "reproduce", run.info.run_id, "--tracking-uri", smoke["tracking"]],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    client = smoke["client"]
    copies = client.search_runs([run.info.experiment_id],
                                filter_string=f"tags.`peft_search.reproduces` = '{run.info.run_id}'")
    assert len(copies) == 1
    copy = copies[0]
    assert copy.data.metrics["accuracy"] == run.data.metrics["accuracy"]
    assert copy.data.metrics["loss"] == pytest.approx(run.data.metrics["loss"], rel=1e-6)
    assert len(client.get_metric_history(copy.info.run_id, "loss")) == 2  # it trained again: a new history
    other = subprocess.run([*CLI, "reproduce", run.info.run_id, "--tracking-uri", smoke["tracking"], "--seed", "7"],
                           capture_output=True, text=True, timeout=300)
    assert other.returncode == 0
    seeded = [c for c in client.search_runs([run.info.experiment_id],
                                            filter_string=f"tags.`peft_search.reproduces` = '{run.info.run_id}'")
              if c.data.params["seed"] == "7"]
    assert seeded[0].data.metrics["loss"] != pytest.approx(run.data.metrics["loss"], rel=1e-6)


def test_export_writes_weights_that_score_the_recorded_metric(smoke, tmp_path):
    for run in (r for r in smoke["runs"] if r.data.tags["pareto"] == "true"):
        out = tmp_path / run.info.run_id
        done = subprocess.run([*CLI, "export", run.info.run_id, str(out), "--tracking-uri", smoke["tracking"]],
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        for confirmation in (c for c in smoke["confirmations"] if c.data.tags["peft_search.confirms"] == run.info.run_id):
            again = tmp_path / confirmation.info.run_id  # its front trial's weights: the same files
            done = subprocess.run([*CLI, "export", confirmation.info.run_id, str(again), "--tracking-uri",
                                   smoke["tracking"]], capture_output=True, text=True, timeout=300)
            assert done.returncode == 0, done.stderr[-2000:]
            assert (again / "modification.safetensors").read_bytes() == (out / "modification.safetensors").read_bytes()
        inputs = recorded_inputs(run)
        assert json.loads((out / "training.json").read_text())["lr"] == float(run.data.params["lr"])
        task, model, data = inputs.pop("task"), inputs.pop("model"), inputs.pop("data_dir")
        inputs.pop("seed")
        assert trainers.evaluate(task, out, model=model, data_dir=data, **inputs)["accuracy"] == run.data.metrics["accuracy"]
        if run.data.tags["preset"] == "lora_attn":  # LoRA designs also go out in HF peft's format
            assert json.loads((out / "peft" / "adapter_config.json").read_text())["peft_type"] == "LORA"
    stopped = next(r for r in smoke["runs"] if r.data.tags["pareto"] == "false")
    refused = subprocess.run([*CLI, "export", stopped.info.run_id, str(tmp_path / "no"), "--tracking-uri",
                              smoke["tracking"]], capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and "a run on a search's Pareto front" in refused.stderr


@pytest.mark.slow
def test_nothing_the_project_starts_sends_mlflow_telemetry(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_DISABLE_TELEMETRY", "DO_NOT_TRACK")}
    probe = "import search.records, dashboards; from mlflow.telemetry.utils import is_telemetry_disabled; " \
            "print(is_telemetry_disabled())"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=120)
    assert out.stdout.strip() == "True", out.stderr[-2000:]


def test_the_mlflow_ui_shows_the_search_in_headless_chromium(smoke, tmp_path):
    port = _free_port()
    server = subprocess.Popen([*CLI, "ui", NAME, "--port", str(port), "--tracking-uri", smoke["tracking"]],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        url = server.stdout.readline().split(": ", 1)[1].strip()
        experiment = smoke["parent"].info.experiment_id
        assert url.startswith(f"http://127.0.0.1:{port}/#/experiments/{experiment}/runs?")  # the training runs
        _wait_for(f"http://127.0.0.1:{port}/health")
        trials = [r for r in smoke["client"].search_runs([experiment]) if "ray_trial_id" in r.data.tags]
        runs_page = _dom(url, until=f"{len(trials)} matching runs")
        assert f"{len(trials)} matching runs" in runs_page  # every trial listed, not folded under the search's run
        assert all(r.info.run_name in runs_page for r in trials)  # confirmations by names of their own
        assert "Model registry" in runs_page and "Judges" not in runs_page  # model training's navigation, not GenAI's
        for run in (r for r in trials if r.data.tags["status"] == "completed"):  # Duration: the trial's, in seconds
            assert any(f"{value:.1f}s" in runs_page for value in (_seconds(run) - 0.05, _seconds(run) + 0.05)), run
        confirmation = smoke["confirmations"][0]  # its page says what it confirms; export finds the weights by it
        page = _dom(f"http://127.0.0.1:{port}/#/experiments/{experiment}/runs/{confirmation.info.run_id}"
                    "?workflowType=machine_learning", until="Confirmation of trial")
        assert f"Confirmation of trial {confirmation.data.tags['optuna_trial']}" in page
        assert "peft_search.weights" in page and confirmation.data.tags["peft_search.weights"] in page
        parent = smoke["parent"].info.run_id
        viewer = f"http://127.0.0.1:{port}/#/experiments/{experiment}/runs/{parent}/artifacts/pareto/pareto.html"
        artifacts = _dom(viewer, tmp_path / "mlflow-ui.png", until="pareto.html")
        assert "pareto.html" in artifacts and "trials.csv" in artifacts
        assert _front_pixels(tmp_path / "mlflow-ui.png") > 100  # the front's red points, drawn inside the viewer
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_optuna_dashboard_shows_the_study_and_ctrl_c_stops_it_at_once(smoke):
    port = _free_port()
    server = subprocess.Popen([*CLI, "ui", NAME, "--optuna", "--storage", f"sqlite:///{smoke['root']}/optuna.db",
                               "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        url = server.stdout.readline().split(": ", 1)[1].strip()
        assert url.startswith(f"http://127.0.0.1:{port}/dashboard/studies/")
        _wait_for(url)
        page = _dom(url, until="Pareto Front")
        assert NAME in page and "Pareto Front" in page and "accuracy" in page  # the objectives carry their names
    finally:
        start = time.time()
        server.send_signal(signal.SIGINT)  # Ctrl-C
        server.wait(timeout=60)
    assert time.time() - start < 10 and server.returncode == 0
    with pytest.raises(OSError):
        urllib.request.urlopen(url, timeout=2)  # nothing left listening


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _front_pixels(screenshot: Path) -> int:
    """Pixels of the front's red (search.plots.FRONT) in a screenshot: nothing else on MLflow's page is that red."""
    from PIL import Image

    from search.plots import FRONT

    red = tuple(int(FRONT[i:i + 2], 16) for i in (1, 3, 5))
    pixels = Image.open(screenshot).convert("RGB").getdata()
    return sum(all(abs(a - b) <= 8 for a, b in zip(pixel, red)) for pixel in pixels)


def _wait_for(url: str, seconds: float = 60) -> None:
    deadline = time.time() + seconds
    while True:
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            assert time.time() < deadline, f"{url} did not answer"
            time.sleep(0.5)


def _dom(url: str, screenshot: Path | None = None, until: str = "") -> str:
    """The page's DOM after its JavaScript ran (Debian's chromium, headless); optionally a screenshot too.
    Returns the page's visible text. The first load of a fresh server can be slow: ``until`` names text to
    wait for (three loads at most)."""
    browser = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=15000",
               "--window-size=1400,900"]
    if screenshot is not None:
        subprocess.run([*browser, f"--screenshot={screenshot}", url], capture_output=True, timeout=120, check=True)
    for _ in range(3):
        dom = subprocess.run([*browser, "--dump-dom", url], capture_output=True, text=True, timeout=120, check=True).stdout
        page = " ".join(re.sub(r"<style.*?</style>|<[^>]+>", " ", dom, flags=re.S).split())  # the visible text
        if until in page:
            break
    return page
