"""``peft-search``: the command line.

Every option is validated before torch, transformers or Ray are imported, so a typo costs a second and
gets one message naming the field and what is allowed (exit code 2, no traceback).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

import peft_space
import trainers
from peft_space import FieldError
from peft_space.dimensions import DIMENSIONS

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
    lines = "\n".join(f"  {dim.describe()}" for dim in DIMENSIONS)
    return f"Design keys are SITE.DIMENSION with SITE one of {', '.join(peft_space.SITES)}:\n\n{lines}"


def parse_sets(pairs: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``KEY=VALUE`` pairs: keys with a dot are design keys (``ffn.bottleneck``), others hyper-parameters."""
    design, hyper = {}, {}
    for pair in pairs:
        key, eq, raw = pair.partition("=")
        if not eq or not key:
            raise FieldError("--set", pair, "KEY=VALUE, e.g. ffn.bottleneck=16 or lr=1e-3")
        value = yaml.safe_load(raw) if raw else raw
        (design if "." in key else hyper)[key.strip()] = value
    return design, hyper


def load_design(name: str | None, design_json: Path | None, overrides: dict[str, Any]) -> peft_space.Design | None:
    """A preset, a JSON design, or ``None`` for full fine-tuning (``--design full``)."""
    if design_json is not None:
        if not design_json.is_file():
            raise FieldError("--design-json", str(design_json), "a readable JSON file written by peft_space")
        flat = {**peft_space.Design.from_json(design_json.read_text()).to_dict(), **overrides}
        return peft_space.Design.from_dict(flat)
    if name is None:
        raise FieldError("--design", None, "a preset: " + ", ".join(peft_space.presets()) + ", or full")
    if name == "full":
        if overrides:
            raise FieldError("--set", overrides, "no design keys with --design full (full fine-tuning)")
        return None
    return peft_space.preset(name, **overrides)


@app.command(epilog=_dimension_help())
def train(
    task: Annotated[str, typer.Option(help="Task: " + ", ".join(trainers.TASKS))] = "sst2",
    design: Annotated[str | None, typer.Option(help="Preset design: " + ", ".join(peft_space.presets()) + "; or full (full fine-tuning)")] = None,
    design_json: Annotated[Path | None, typer.Option(help="A design JSON file (from peft_space.save or MLflow)")] = None,
    set_: Annotated[list[str], typer.Option("--set", help="Override: a design key (ffn.bottleneck=16) or a "
                                            "hyper-parameter (lr=3e-4, batch_size=16, eval_examples=200); repeatable")] = [],
    model: Annotated[str, typer.Option(help="Base model: 'minilm' (shipped) or any transformers name or path")] = "minilm",
    steps: Annotated[int | None, typer.Option(help="Optimiser steps (default: the task's recipe)")] = None,
    seed: Annotated[int, typer.Option(help="Seed for the head, the design's init, data order and dropout")] = 0,
    data_dir: Annotated[Path | None, typer.Option(help="Directory with the task's files (default: shared/data)")] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar")] = True,
    output: Annotated[Path | None, typer.Option(help="Also write the full result as JSON here")] = None,
) -> None:
    """Train one design on one task and print its metrics and budget."""
    design_sets, hyper = parse_sets(set_)
    chosen = load_design(design, design_json, design_sets)
    if task not in trainers.TASKS:
        raise FieldError("--task", task, "one of " + ", ".join(trainers.TASKS))
    task_obj = trainers.TASKS[task]
    if steps is not None:
        hyper["steps"] = steps
    trainers.resolve(task_obj, hyper)  # validate hyper-parameters before the heavy imports
    result = trainers.train(task_obj, chosen, model=model, seed=seed, data_dir=data_dir, progress=progress, **hyper)
    _print_result(result)
    if output is not None:
        output.write_text(json.dumps(result.to_dict(), indent=2, default=str))
    raise typer.Exit(0 if result.status == "completed" else 1)


def _print_result(result: Any) -> None:
    from rich.console import Console
    from rich.table import Table

    budget = result.budget
    table = Table(title=f"{result.config['task']} · design {result.config['design_id']} · {result.status} "
                        f"after {result.step} steps")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for split, metrics in (("validation", result.validation), (result.config.get("test_split", "test"), result.test)):
        for name, value in metrics.items():
            table.add_row(f"{split} {name}", f"{value:.4f}")
    table.add_row("budget (analytic)", f"{budget['analytic']:,} = {budget['pct_analytic']:.3f}%")
    table.add_row("budget (actual)", f"{budget['actual']:,} = {budget['pct_actual']:.3f}%")
    table.add_row("task head, new parts (outside budget)", f"{budget['head']:,}, {budget['new']:,}")
    table.add_row("examples/s", f"{result.examples_per_second:.1f}")
    console = Console()
    console.print(table)
    if result.error:
        console.print(f"[red]failed:[/red] {result.error}")


def main() -> None:
    """Entry point: bad input is one line on stderr and exit code 2."""
    try:
        code = app(standalone_mode=False)
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
