"""``peft-search``: the command line.

Every option is validated before torch, transformers or Ray are imported, so a typo costs a second and
gets one message naming the field and what is allowed (exit code 2, no traceback).
"""

from __future__ import annotations

import contextlib
import inspect
import json
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

import peft_space
import trainers
from peft_space import DIMENSIONS, FieldError
from search import spec as specs
from search.spec import SpecError, import_plugins
from trainers import DEFAULT_MODEL, FULL, SE

import_plugins(os.environ.get("PEFT_SEARCH_PLUGINS", "").split(",") if os.environ.get("PEFT_SEARCH_PLUGINS") else [])

TRACKING = Annotated[str, typer.Option(help="MLflow tracking URI the search recorded to")]
ROOT = Annotated[str, typer.Option(help="The folder the search was started under")]

app = typer.Typer(
    name="peft-search",
    help="Search the design space of parameter-efficient fine-tuning (He et al., 2022).",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
)


@app.callback()
def cli() -> None:
    """Search the design space of parameter-efficient fine-tuning (He et al., 2022): train one design, run a
    search over the design dimensions on Ray Tune, browse the Pareto fronts in MLflow."""


def _dimension_help() -> str:
    lines = "\n".join(f"  {dim.describe()}" for dim in DIMENSIONS.values())
    return f"Design keys are SITE.DIMENSION with SITE one of {', '.join(peft_space.SITES)}:\n\n{lines}"


def key_values(pairs: list[str], example: str) -> dict[str, Any]:
    """``--set KEY=VALUE`` pairs, each value read as YAML (``16`` is a number, ``[a, b]`` a list)."""
    values = {}
    for pair in pairs:
        key, eq, raw = pair.partition("=")
        if not eq or not key:
            raise FieldError("--set", pair, f"KEY=VALUE, e.g. {example}")
        values[key.strip()] = yaml.safe_load(raw) if raw else raw
    return values


def parse_sets(pairs: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Keys with a dot are design keys (``ffn.bottleneck``), others hyper-parameters."""
    values = key_values(pairs, "ffn.bottleneck=16 or lr=1e-3")
    return {k: v for k, v in values.items() if "." in k}, {k: v for k, v in values.items() if "." not in k}


def load_design(name: str | None, design_json: Path | None, overrides: dict[str, Any]) -> peft_space.Design | None:
    """A preset, a JSON design, or ``None`` for full fine-tuning (``--design full``)."""
    if design_json is not None:
        if not design_json.is_file():
            raise FieldError("--design-json", str(design_json), "a readable JSON file written by peft_space")
        flat = {**peft_space.Design.from_json(design_json.read_text()).to_dict(), **overrides}
        return peft_space.Design.from_dict(flat)
    if name is None:
        raise FieldError("--design", None, "a preset: " + ", ".join(peft_space.presets()) + f", or {FULL}")
    if name == FULL:
        if overrides:
            raise FieldError("--set", overrides, "no design keys with --design full (full fine-tuning)")
        return None
    return peft_space.preset(name, **overrides)


def _with_options(options: dict[str, tuple[type, str]],
                  panel: str | None = None) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Give a command one option per entry of ``options`` (option name -> its type and help, from a declaration),
    shown under ``panel`` in ``--help``; the values given arrive in the command's ``**`` keywords by option name
    (None where not given)."""
    def add(command: Callable[..., None]) -> Callable[..., None]:
        signature = inspect.signature(command, eval_str=True)
        own = [p for p in signature.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
        added = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None,
                                   annotation=Annotated[kind | None, typer.Option(help=text, rich_help_panel=panel)])
                 for name, (kind, text) in options.items()]
        command.__signature__ = signature.replace(parameters=[*own, *added])  # type: ignore[attr-defined]
        return command

    return add


def _hyperparameter_options() -> dict[str, tuple[type, str]]:
    """``peft-search train``'s options from ``TrainConfig``'s declarations: numbers and names are given as text and
    checked by ``trainers.resolve`` (one message naming the field), true/false as a flag."""
    return {h.name: (bool if h.type is bool else str, f"{h.help}; allowed: {h.allowed} (default: the task's "
                                                      f"recipe, else {h.default})")
            for h in trainers.hyperparameters()}


@app.command(epilog=_dimension_help())
@_with_options(_hyperparameter_options(), panel="Training hyper-parameters")
def train(
    task: Annotated[str, typer.Option(help="Task: " + ", ".join(trainers.TASKS) + ", or a YAML file declaring one "
                                      "(its fields: task.* in `peft-search fields`)")] = "sst2",
    design: Annotated[str | None, typer.Option(help="Preset design: " + ", ".join(peft_space.presets()) + f"; or {FULL} (full fine-tuning)")] = None,
    design_json: Annotated[Path | None, typer.Option(help="A design JSON file (from peft_space.save or MLflow)")] = None,
    set_: Annotated[list[str], typer.Option("--set", help="Override: a design key (ffn.bottleneck=16) or a "
                                            "hyper-parameter (lr=3e-4, batch_size=16, eval_examples=200); repeatable")] = [],
    model: Annotated[str, typer.Option(help=f"Base model: '{DEFAULT_MODEL}' (shipped) or any transformers name or path")] = DEFAULT_MODEL,
    seed: Annotated[int, typer.Option(help="Seed for the head, the design's init, data order and dropout")] = 0,
    data_dir: Annotated[Path | None, typer.Option(help="Directory with the task's files (default: $PEFT_SEARCH_DATA, "
                                                       "a checkout's shared/data, ~/.local/share/peft-search/data, "
                                                       "the hub, the packaged SST-2)")] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar")] = True,
    output: Annotated[Path | None, typer.Option(help="Also write the full result as JSON here")] = None,
    **given: Any,
) -> None:
    """Train one design on one task and print its metrics and budget. Every training hyper-parameter is an option
    (below) or --set NAME=VALUE; `peft-search fields` lists them too (as train.NAME of a search spec)."""
    design_sets, hyper = parse_sets(set_)
    chosen = load_design(design, design_json, design_sets)
    task_obj = trainers.task_of(specs.task_choice("--task", task))
    hyper |= {name: value for name, value in given.items() if value is not None}
    trainers.resolve(task_obj, hyper)  # validate hyper-parameters before the heavy imports
    result = trainers.train(task_obj, chosen, model=model, seed=seed, data_dir=data_dir, progress=progress, **hyper)
    _print_result(result)
    if output is not None:
        output.write_text(json.dumps(result.to_dict(), indent=2, default=str))
    raise typer.Exit(0 if result.status == trainers.Status.COMPLETED else 1)


def _print_result(result: Any) -> None:
    from rich.console import Console
    from rich.table import Table

    budget = result.budget
    table = Table(title=f"{result.config['task']} · design {result.config['design_id']} · {result.status} "
                        f"after {result.step} steps")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for split, metrics in (("validation", result.validation), ("test", result.test)):
        for name, value in metrics.items():
            if not name.endswith(SE):
                table.add_row(f"{split} {name} ({result.config.get(f'split.{split}', split)})",
                              f"{value:.4f}" + (f" ± {metrics[name + SE]:.4f}" if name + SE in metrics else ""))
    table.add_row("budget (analytic)", f"{budget['analytic']:,} = {budget['pct_analytic']:.3f}%")
    table.add_row("budget (actual)", f"{budget['actual']:,} = {budget['pct_actual']:.3f}%")
    table.add_row("task head, new parts (outside budget)", f"{budget['head']:,}, {budget['new']:,}")
    table.add_row("examples/s", f"{result.examples_per_second:.1f}")
    console = Console()
    console.print(table)
    if result.error:
        console.print(f"[red]failed:[/red] {result.error}")


def _option_type(declared: Any) -> type:
    """int for integer fields; any other field is parsed from its text by the spec (``budget_cap: 1%``)."""
    return int if type(declared.default) is int else str


@app.command(epilog=_dimension_help())
@_with_options({name: (_option_type(declared), specs.field_help(declared)) for name, declared in specs.flags().items()})
def run(
    spec_file: Annotated[Path | None, typer.Argument(metavar="[SPEC]", help="A search spec (YAML; its fields: "
                                                     "`peft-search fields`); none: the embedded default (MiniLM "
                                                     "on SST-2, about 10 minutes on 2 CPUs)")] = None,
    set_: Annotated[list[str], typer.Option("--set", help="Any other spec field, dotted for nested ones: "
                                            "asha.max_steps=60, search_train.lr=\\[1e-4,1e-3], train.dropout=0, "
                                            "values.form=\\[linear,relu]; repeatable")] = [],
    smoke: Annotated[bool, typer.Option(help="A tiny profile of the same path (4 trials of a few steps): checks "
                                        "that everything runs; other options still apply")] = False,
    verbose: Annotated[int, typer.Option(help="Ray Tune output: 0 silent, 1 status, 2 every result")] = 1,
    **flags: Any,
) -> None:
    """Search the design space on Ray Tune (Optuna picks designs, ASHA stops poor ones) and print the Pareto front.

    Trials are recorded in MLflow (a parent run for the search, a child run per trial) and in the Optuna
    study; an interrupted search continues with [bold]peft-search resume NAME[/bold]."""
    data = _spec_data(spec_file)
    if smoke:  # the tiny profile first: the options given still apply (--smoke --set confirm_seeds=1)
        data = specs.smoke(data)
    declared = specs.flags()
    data |= {declared[option].name: value for option, value in flags.items() if value is not None}
    for key, value in key_values(set_, "asha.max_steps=60 or train.lr=3e-4").items():
        _put(data, key, value)
    _search(specs.parse(data), resume=False, verbose=verbose)


@app.command()
def fields() -> None:
    """Every field of a search spec (YAML) with its default and what it means; `run` takes the common ones as
    options and any of them as --set FIELD=VALUE."""
    typer.echo(specs.describe())


@app.command()
def resume(
    name: Annotated[str, typer.Argument(help="The search to continue")],
    root: ROOT = specs.Spec.root,
    trials: Annotated[int | None, typer.Option(help="Raise the number of designs to train")] = None,
    verbose: Annotated[int, typer.Option(help="Ray Tune output: 0 silent, 1 status, 2 every result")] = 1,
) -> None:
    """Continue an interrupted search (Ctrl-C, a killed driver) where it stopped; finished trials are kept."""
    spec = specs.saved_spec(root, name)
    _search(spec.replace(trials=trials) if trials else spec, resume=True, verbose=verbose)


@app.command()
def pareto(
    name: Annotated[str, typer.Argument(help="A finished or running search")],
    root: ROOT = specs.Spec.root,
    json_: Annotated[bool, typer.Option("--json", help="Print the summary as JSON")] = False,
) -> None:
    """Print the Pareto front of a search (full-budget trials only), its hypervolume and MAM's rank."""
    spec = specs.saved_spec(root, name)
    from search import conclude

    summary = conclude.summarise(spec)
    if json_:
        print(summary.to_json())
    else:
        _print_summary(summary, name)


@app.command()
def reproduce(
    run_id: Annotated[str, typer.Argument(help="A trial's MLflow run id (peft-search ui, or the parent's trials.csv)")],
    tracking_uri: TRACKING = specs.Spec.tracking_uri,
    seed: Annotated[int | None, typer.Option(help="Train with another seed instead of the recorded one")] = None,
) -> None:
    """Re-train one trial from what its run recorded (design, hyper-parameters, seed, data, threads) and print the
    recorded and new metrics side by side; the reproduction is logged as a new run linked to the original."""
    from rich.console import Console
    from rich.table import Table

    from search.reproduce import reproduce as again

    recorded, new, new_run = again(tracking_uri, run_id, seed)
    table = Table(title=f"run {run_id} reproduced as {new_run}")
    for column in ("metric", "recorded", "now"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    for name, value in new.items():
        table.add_row(name, f"{recorded[name]:.6f}" if name in recorded else "—", f"{value:.6f}")
    Console().print(table)


@app.command()
def export(
    run_id: Annotated[str, typer.Argument(help="A front trial's MLflow run id (tag pareto=true), or its "
                                              "confirmation run's")],
    out: Annotated[Path, typer.Argument(help="Folder to write the modification to")],
    tracking_uri: TRACKING = specs.Spec.tracking_uri,
) -> None:
    """Write a front trial's trained modification (safetensors + design JSON; HF peft's format under peft/ for
    LoRA designs), for inference with peft_space.load."""
    from search.reproduce import export as write

    print(write(tracking_uri, run_id, out))


@app.command()
def ui(
    name: Annotated[str | None, typer.Argument(help="A search to open (default: the list of searches)")] = None,
    tracking_uri: TRACKING = specs.Spec.tracking_uri,
    optuna: Annotated[bool, typer.Option(help="Open the search's Optuna study in optuna-dashboard instead: its "
                                              "Pareto front, parameter importances and history")] = False,
    storage: Annotated[str, typer.Option(help="Optuna storage URL the search used (with --optuna)")] = specs.Spec.storage,
    host: Annotated[str, typer.Option(help="Interface to listen on (127.0.0.1: this machine only)")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port")] = 5000,
) -> None:
    """Start the MLflow UI against the project's store and print the URL of the search's trials (Ctrl-C stops it)."""
    if optuna:
        url, command = _optuna_dashboard(name, storage, host, port)
    else:
        url, command = _mlflow_ui(name, tracking_uri, host, port)
    print(f"{'optuna-dashboard' if optuna else 'MLflow UI'} for {name or 'all searches'}: {url}", flush=True)
    raise typer.Exit(_serve(command))


def _mlflow_ui(name: str | None, tracking_uri: str, host: str, port: int) -> tuple[str, list[str]]:
    from urllib.parse import quote

    from search.mlflow_runs import client
    from search.schema import Params, Tags

    url = f"http://{host}:{port}/"
    if name is not None:
        experiment = client(tracking_uri).get_experiment_by_name(name)
        if experiment is None:
            raise FieldError("NAME", name, f"a search recorded in {tracking_uri}")
        # the search's training runs, trials listed flat (not folded under the search's run), cheapest first, in
        # the UI's model-training navigation: MLflow 3.17 opens GenAI's unless the URL asks (it ignores the
        # experiment's mlflow.experimentKind tag)
        url += (f"#/experiments/{experiment.experiment_id}/runs?workflowType=machine_learning&searchFilter="
                + quote(f"tags.{Tags.TRIAL} != ''") + "&orderByKey=" + quote(f"params.`{Params.BUDGET}`")
                + "&orderByAsc=true")
    return url, [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", tracking_uri, "--host", host,
                 "--port", str(port), "--workers", "1"]


def _optuna_dashboard(name: str | None, storage: str, host: str, port: int) -> tuple[str, list[str]]:
    import optuna

    from search.stores import JOURNAL, open_storage

    url = f"http://{host}:{port}/dashboard/"
    if name is not None:
        backend = optuna.storages.get_storage(open_storage(storage))
        try:
            url += f"studies/{backend.get_study_id_from_name(name)}"
        except KeyError:
            known = ", ".join(optuna.get_all_study_names(backend)) or "none"
            raise FieldError("NAME", name, f"a search whose study is in {storage}: {known}") from None
    dashboard = str(Path(sys.executable).parent / "optuna-dashboard")  # it reads a journal file from its path
    return url, [dashboard, storage.removeprefix(JOURNAL), "--host", host, "--port", str(port), "--quiet"]


def _serve(command: list[str]) -> int:
    """Run a UI server in its own process group (its workers included) until it ends or we are stopped:
    Ctrl-C or SIGTERM stops the whole group at once, nothing is left listening."""
    import subprocess

    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    server = subprocess.Popen(command, env=env, start_new_session=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    signal.signal(signal.SIGINT, signal.default_int_handler)  # also when started with SIGINT ignored (a script's `&`)
    try:
        return server.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGKILL)  # a UI holds no state of ours: no graceful shutdown to wait for
        server.wait()


@app.command()
def table(
    names: Annotated[list[str], typer.Argument(help="One or more searches")],
    tracking_uri: TRACKING = specs.Spec.tracking_uri,
) -> None:
    """Print each search's results in the paper's Table 6 layout (method, % params, metric) and its front,
    read back from MLflow."""
    from rich.console import Console
    from rich.table import Table

    import dashboards

    console = Console()
    for name in names:
        try:
            frame = dashboards.trials(tracking_uri, name)
        except ValueError as err:
            raise FieldError("NAME", name, str(err).split("; ", 1)[-1]) from None
        shown = Table(title=f"{name} ({frame.attrs['metric']}, median over seeds; * on the front)")
        for column in ("method", "# params (%)", frame.attrs["metric"], "runs"):
            shown.add_column(column, justify="left" if column == "method" else "right")
        for row in dashboards.table6(frame).itertuples():
            shown.add_row(row.method + (" *" if row.on_front else ""), f"{row.params_pct:.3f}", f"{row.metric:.4f}", str(row.runs))
        console.print(shown)


@app.command()
def tabulate(
    spec_file: Annotated[Path, typer.Argument(metavar="SPEC", help="A grid spec: sampler: grid and a menu at "
                                              "every site (e.g. benchmarks/tabular/sst2_minilm.yaml)")],
    out: Annotated[Path | None, typer.Option(help="The table (default: the spec file's name with .csv)")] = None,
    full_lr: Annotated[list[float], typer.Option(help="Learning rate of full fine-tuning's reference rows (a PEFT "
                                                      "learning rate is far too high for it); repeat it for several "
                                                      "when the grid varies lr")] = [5e-5],  # noqa: B006 (typer's way)
    export_only: Annotated[bool, typer.Option(help="Only read the recorded trials back into the table")] = False,
    verbose: Annotated[int, typer.Option(help="Ray Tune output: 0 silent, 1 status, 2 every result")] = 1,
) -> None:
    """Build a tabular benchmark: train every (design, hyper-parameters, seed) of a grid for real, then full
    fine-tuning as reference rows, and write every evaluation to one CSV that searches replay with
    [bold]trainer: tabular[/bold]. It resumes from the CSV and the search's records: a rerun (on another machine
    too, from a committed CSV) trains only what neither holds, as do designs or values added to the spec later."""
    spec = specs.parse(_spec_data(spec_file))
    if spec.sampler != "grid":
        raise FieldError("sampler", spec.sampler, "grid (a table holds every design of a grid)")
    from search.tabulate import build

    table = build(spec, out or spec_file.with_suffix(".csv"), full_lrs=full_lr, export_only=export_only,
                  verbose=verbose)
    print(f"{out or spec_file.with_suffix('.csv')}: {len(table)} rows, {table['design_id'].nunique()} designs, "
          f"{table['config_id'].nunique()} configurations, {table['seed'].nunique()} seeds")


def _search(spec: specs.Spec, *, resume: bool, verbose: int) -> None:
    """Run or resume a search and print its front; a search whose every trial failed says why and exits 1."""
    from search import runner

    try:
        summary = runner.run(spec, resume=resume, verbose=verbose)
    except runner.SearchFailed as err:
        print(f"peft-search: error: {err}", file=sys.stderr)
        raise typer.Exit(1) from None
    _print_summary(summary, spec.name)


def _spec_data(path: Path | None) -> dict[str, Any]:
    return specs.read(path or specs.DEFAULT)


def _put(data: dict[str, Any], key: str, value: Any) -> None:
    head, dot, rest = key.partition(".")
    if not dot:
        data[head] = value
        return
    inner = data.setdefault(head, {})
    if not isinstance(inner, dict):
        raise FieldError("--set", key, f"a field inside a mapping ({head} is not one)")
    data[head] = {**inner, rest: value}


def _print_summary(summary: Any, name: str) -> None:
    from rich.console import Console

    from search.report import render

    Console().print(render(summary, name))


def main() -> None:
    """Entry point: bad input is one line on stderr and exit code 2."""
    try:
        code = app(standalone_mode=False)
    except (SpecError, trainers.DeclarationError) as err:
        print("\n".join(f"peft-search: error: {p}" for p in err.problems), file=sys.stderr)
        sys.exit(2)
    except FieldError as err:
        print(f"peft-search: error: {err}", file=sys.stderr)
        sys.exit(2)
    except typer.Exit as done:
        sys.exit(done.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        print("peft-search: interrupted", file=sys.stderr)
        sys.exit(130)
    except typer.TyperException as err:  # usage errors: unknown option, a value of the wrong type
        err.show()
        sys.exit(2)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
