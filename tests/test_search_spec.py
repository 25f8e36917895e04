"""Search specs: validated on load, every problem reported at once, before any heavy import."""

import subprocess
import sys

import pytest

import trainers
from search.spec import SpecError, load, parse

GOOD = """
name: sst2-small
task: sst2
sites: [attn, ffn]
values: {form: [linear, relu, softmax]}
ranges: {bottleneck: [2, 64]}
points_to_evaluate: [lora_attn, mam]
preset_overrides: {mam: {attn.bottleneck: 4, ffn.bottleneck: 16}}
budget_cap: 1%
sampler: nsga2
asha: {grace_period: 10, max_steps: 90}
trials: 12
concurrency: 2
resources: {cpu: 1, gpu: 0.5}
train: {lr: 1.0e-3, train_examples: 2000}
"""


def test_a_good_spec_loads_with_defaults_filled(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text(GOOD)
    spec = load(path)
    assert spec.budget_cap == 1.0 and spec.sampler == "nsga2" and spec.values["form"] == ("linear", "relu", "softmax")
    assert spec.asha == {"grace_period": 10, "reduction_factor": 3, "max_steps": 90}
    assert spec.ranges == {"bottleneck": (2, 64), "scale": (0.5, 8.0)} and spec.resources["gpu"] == 0.5
    assert spec.space().sites == ("attn", "ffn")


BAD = {
    "task": ("squad", "task: 'squad' is not allowed; allowed: one of sst2, mnli, xsum, wmt16_en_ro"),
    "sites": (["attn", "mlp"], "sites: 'mlp' is not allowed; allowed: one of attn, enc_attn"),
    "values": ({"form": ["tanh"]}, "values.form: 'tanh' is not allowed; allowed: one of 'linear'"),
    "ranges": ({"bottleneck": [0, 8]}, "ranges.bottleneck: [0, 8] is not allowed; allowed: [low, high] within an integer in [1, 65536]"),
    "points_to_evaluate": (["lora_qkv"], "points_to_evaluate: 'lora_qkv' is not allowed; allowed: one of bitfit"),
    "preset_overrides": ({"mam": {"ffn.scale": -1}}, "preset_overrides.mam.ffn.scale: -1 is not allowed"),
    "budget_cap": ("lots", "budget_cap: 'lots' is not allowed; allowed: a percentage in (0, 100]"),
    "sampler": ("cmaes", "sampler: 'cmaes' is not allowed; allowed: one of tpe, nsga2, random, gp"),
    "trials": (0, "trials: 0 is not allowed; allowed: an integer in [1, 1,000,000]"),
    "concurrency": ("two", "concurrency: 'two' is not allowed"),
    "asha": ({"reduction_factor": 1}, "asha.reduction_factor: 1 is not allowed; allowed: an integer in [2, 1,000]"),
    "resources": ({"tpu": 1}, "resources.tpu: 'tpu' is not allowed; allowed: cpu, gpu"),
    "storage": ("optuna.db", "storage: 'optuna.db' is not allowed; allowed: a URL such as sqlite:///path.db"),
    "tracking_uri": ("postgresql://peft:hunter2@db:5432/mlflow", "tracking_uri: 'postgresql://peft:***@db:5432/mlflow' "
                     "is not allowed; allowed: a URL without a password; give the password in the environment"),
    "train": ({"lr": "fast"}, "train.lr: 'fast' is not allowed; allowed: a float"),
    "asha_metric": ("bleu", "asha_metric: 'bleu' is not allowed; allowed: one of accuracy, loss"),
    "colour": ("blue", "colour: 'blue' is not allowed; allowed: spec fields"),
    "name": ("", "name: '' is not allowed; allowed: 1 to 100 letters, digits, '_', '-' or '.'"),
    "seed": (-1, "seed: -1 is not allowed; allowed: an integer in [0, 4,294,967,295]"),
    "synthetic_delay": (True, "synthetic_delay: True is not allowed; allowed: a number of seconds ≥ 0"),
    "menus": ({"ffn": {"lora_attn": {}}}, "menus.ffn: 'lora_attn' is not allowed; allowed: presets that modify ffn"),
    "plugins": (["no_such_module"], "plugins: ['no_such_module'] is not allowed; allowed: importable module names"),
}


# A value no rule of its field may take: a name that would become a path outside the search's folder, a number
# that is not one (NaN, infinity), a count no cluster runs. Each was accepted once and failed later (a traceback
# writing outside the root, every trial failing, Ray crashing while the driver hung).
UNSOUND = [
    ({"name": "../../etc"}, "name: '../../etc' is not allowed"),
    ({"name": "a/b"}, "name: 'a/b' is not allowed"),
    ({"name": "x" * 101}, "is not allowed; allowed: 1 to 100 letters"),
    ({"concurrency": 1_000_000_000_000}, "concurrency: 1000000000000 is not allowed; allowed: an integer in [1, 10,000]"),
    ({"trials": 10**12}, "trials: 1000000000000 is not allowed"),
    ({"seed": 2**40}, "seed: 1099511627776 is not allowed"),
    ({"asha": {"max_steps": 10**12}}, "asha.max_steps: 1000000000000 is not allowed"),
    ({"budget_cap": float("nan")}, "budget_cap: nan is not allowed"),
    ({"budget_cap": "inf%"}, "budget_cap: 'inf%' is not allowed"),
    ({"synthetic_delay": float("inf")}, "synthetic_delay: inf is not allowed"),
    ({"synthetic_delay": float("nan")}, "synthetic_delay: nan is not allowed"),
    ({"resources": {"cpu": float("inf")}}, "resources.cpu: inf is not allowed"),
    ({"resources": {"gpu": float("nan")}}, "resources.gpu: nan is not allowed"),
    ({"ranges": {"scale": [1.0, float("nan")]}}, "ranges.scale: [1.0, nan] is not allowed"),
    ({"ranges": {"scale": [float("-inf"), 2.0]}}, "ranges.scale: [-inf, 2.0] is not allowed"),
    ({"preset_overrides": {"scaled_pa_ffn": {"ffn.scale": float("nan")}}}, "preset_overrides.scaled_pa_ffn.ffn.scale: nan"),
    ({"train": {"lr": float("nan")}}, "train.lr: nan is not allowed"),
    ({"train": {"lr": float("inf")}}, "train.lr: inf is not allowed"),
    ({"train": {"warmup_ratio": float("nan")}}, "train.warmup_ratio: nan is not allowed"),
    ({"search_train": {"lr": [1e-3, 1e-4]}}, "search_train.lr: [0.001, 0.0001] is not allowed; allowed: [low, high] "
                                             "with low ≤ high"),
    ({"search_train": {"lr": [float("nan"), 1e-2]}}, "search_train.lr: nan is not allowed"),
    ({"search_train": {"warmup_ratio": [0, 1]}}, "search_train.warmup_ratio: 1 is not allowed; allowed: null, [low, "
                                                 "high] or {values: [...]}, each a float in [0, 1)"),
    ({"search_train": {"dropout": {"values": [0.1, 0.1]}}}, "search_train.dropout: {'values': [0.1, 0.1]} is not"),
    ({"search_train": {"lr": {"values": []}}}, "search_train.lr: {'values': []} is not allowed"),
    ({"search_train": {"batch_size": [8, 64]}}, "search_train.batch_size: [8, 64] is not allowed; allowed: {values:"),
    ({"search_train": {"momentum": None}}, "search_train.momentum: 'momentum' is not allowed; allowed: searchable "
                                           "hyper-parameters lr, batch_size"),
    ({"search_train": ["lr"]}, "search_train: ['lr'] is not allowed"),
    ({"search_train": {"lr": None}, "train": {"lr": 1e-3}}, "train.lr: 0.001 is not allowed; allowed: no value for a "
                                                            "hyper-parameter search_train samples"),
    ({"sampler": "grid", "menus": {"attn": {"lora_attn": {}}, "ffn": {"pa_ffn": {}}}, "search_train": {"lr": None}},
     "search_train.lr: [1e-05, 0.01] is not allowed; allowed: {values: [...]} with sampler: grid"),
    ({"designs": ["head only"]}, "designs: ['head only'] is not allowed; allowed: [] unless menus name every site"),
    ({"sampler": "grid", "menus": {"attn": {"lora_attn": {}}, "ffn": {"pa_ffn": {}}}, "designs": ["mam"]},
     "designs: 'mam' is not allowed; allowed: a combination of the menus: head only, pa_ffn, lora_attn, "),
    ({"train": {"pooling": "max"}}, "train.pooling: 'max' is not allowed; allowed: one of 'cls', 'mean'"),
]


@pytest.mark.parametrize("data, message", UNSOUND, ids=[str(d)[:40] for d, _ in UNSOUND])
def test_unsound_values_are_refused_by_their_field(data, message):
    with pytest.raises(SpecError) as err:
        parse(data)
    assert message in str(err.value) and len(err.value.problems) == 1


@pytest.mark.parametrize("field", BAD)
def test_each_bad_field_is_named(field):
    value, message = BAD[field]
    with pytest.raises(SpecError) as err:
        parse({field: value})
    assert message in str(err.value)


def test_every_problem_is_reported_at_once():
    with pytest.raises(SpecError) as err:
        parse({key: value for key, (value, _) in BAD.items()})
    assert len(err.value.problems) >= len(BAD)
    assert str(err.value).count("\n") == len(err.value.problems) - 1


def test_a_store_url_with_a_password_is_refused_without_repeating_the_password():
    with pytest.raises(SpecError) as err:
        parse({"storage": "postgresql://peft:hunter2@db/optuna", "tracking_uri": "http://me:hunter2@mlflow:5000"})
    assert len(err.value.problems) == 2 and "hunter2" not in str(err.value)
    assert parse({"storage": "postgresql://peft@db:5432/optuna"}).storage == "postgresql://peft@db:5432/optuna"


def test_a_list_field_given_one_name_is_refused_and_a_mapping_keeps_its_default_keys():
    with pytest.raises(SpecError, match="sites: 'attn' is not allowed; allowed: a list of attn, enc_attn"):
        parse({"sites": "attn"})
    spec = parse({"asha": {"max_steps": 90}, "resources": {"gpu": 0.25}, "sites": ["ffn"]})
    assert spec.asha == {"grace_period": 20, "reduction_factor": 3, "max_steps": 90} and spec.sites == ("ffn",)
    assert spec.resources == {"cpu": 1, "gpu": 0.25}
    with pytest.raises(SpecError, match="menus: 'attn' is not allowed; allowed: a searched site \\(ffn\\)"):
        parse({"sites": ["ffn"], "menus": {"attn": {"lora_attn": {}}}})


def test_files_that_are_not_specs(tmp_path):
    (tmp_path / "broken.yaml").write_text("task: [sst2\n")
    (tmp_path / "list.yaml").write_text("- sst2\n")
    for name, message in [("broken.yaml", "valid YAML"), ("list.yaml", "a mapping of spec fields"),
                          ("missing.yaml", "a readable YAML file")]:
        with pytest.raises(SpecError, match=message):
            load(tmp_path / name)


def test_validation_imports_no_heavy_library(tmp_path):
    code = ("import sys; from search.spec import parse\n"
            "try:\n    parse({'task': 'squad'})\nexcept ValueError: pass\n"
            "print(sorted(m for m in ('torch', 'transformers', 'ray', 'mlflow', 'optuna') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_each_field_is_declared_once_and_the_help_and_options_derive_from_it():
    import dataclasses
    import os
    from pathlib import Path

    from search.spec import Spec, field_help, flags

    declared = dataclasses.fields(Spec)
    assert all(f.metadata["help"] for f in declared)
    assert all(f.metadata["choices"] or f.metadata["check"] for f in declared)  # parse checks each by its own rule
    cli = str(Path(sys.executable).parent / "peft-search")
    listing = subprocess.run([cli, "fields"], capture_output=True, text=True, check=True).stdout.splitlines()
    assert [line.split(":")[0] for line in listing if not line.startswith(" ")] == [f.name for f in declared]
    hyper = [line.strip() for line in listing if line.startswith("  train.")]  # the trainer's, from its declarations
    assert [line.split(":")[0] for line in hyper] == [f"train.{h.name}" for h in trainers.hyperparameters()
                                                     if h.name != "steps"]
    assert "train.lr: 0.0001  # peak learning rate of AdamW" in hyper[0]
    assert hyper[0].endswith("allowed: a float > 0; search_train samples [1e-05, 0.01], log scale")
    train_help = subprocess.run([cli, "train", "--help"], capture_output=True, text=True, check=True,
                                env={**os.environ, "COLUMNS": "400"}).stdout
    assert all(f"--{h.name.replace('_', '-')} " in train_help for h in trainers.hyperparameters())
    assert "allowed: a float in [0, 1)" in train_help  # label_smoothing, dropout: what each allows
    assert "sampler: tpe  # " + field_help(flags()["sampler"]) in listing  # choices listed from the declaration
    shown = subprocess.run([cli, "run", "--help"], capture_output=True, text=True, check=True,
                           env={**os.environ, "COLUMNS": "400"}).stdout
    assert flags()["address"].name == "ray_address"
    assert all(f"--{option.replace('_', '-')} " in shown for option in flags())
    assert "one of tpe, nsga2, random, gp, grid" in shown


def test_every_implementation_a_spec_can_name_is_in_one_table_and_imports():
    import dataclasses

    from search.implementations import SAMPLERS, SCHEDULERS, TRAINERS, load
    from search.spec import Spec, field_choices

    declared = {f.name: f for f in dataclasses.fields(Spec)}
    for field, table in (("sampler", SAMPLERS), ("trainer", TRAINERS), ("scheduler", SCHEDULERS)):
        assert field_choices(declared[field]) == list(table)  # the spec offers exactly the table's names
        assert all(callable(load(table, name)) for name in table), field
    from search.samplers import make_sampler

    assert type(make_sampler("tpe", 2, seed=0)).__name__ == "TPESampler"
    assert type(make_sampler("grid", 1, seed=0)).__name__ == "RandomSampler"  # a grid enqueues: nothing is drawn
