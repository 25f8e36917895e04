"""The Optuna space derived from peft_space's declarations, and the Pareto front and hypervolume."""

import optuna
import pytest

import peft_space
from peft_space import Design, Form, dimension
from search.pareto import dominates, front, hypervolume
from search.space import Space, params_of, suggest
from search.spec import Spec

optuna.logging.set_verbosity(optuna.logging.WARNING)


def sample(space: Space, n: int, seed: int = 0) -> list[Design]:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    designs = []
    for _ in range(n):
        trial = study.ask()
        designs.append(suggest(trial, space))
        study.tell(trial, 0.0)  # Optuna checks that each parameter name keeps one distribution
    return designs


def test_random_trials_are_valid_designs_covering_the_space():
    designs = sample(Space(), 300)
    forms = {(s, m["form"]) for d in designs for s, m in d.sites.items()}
    assert {("attn", "softmax"), ("attn", "relu"), ("attn", "linear"), ("ffn", "relu"), ("ffn", "bias")} <= forms
    assert any(not d.sites for d in designs)  # "none" at both sites
    prefix = [d.sites["attn"] for d in designs if d.sites.get("attn", {}).get("form") == "softmax"]
    assert prefix and all(m["representation"] == "head" and m["insertion"] == "parallel" for m in prefix)
    scaled = [m for d in designs for m in d.sites.values() if m.get("composition") == "scaled"]
    added = [m for d in designs for m in d.sites.values() if m.get("composition") == "add"]
    assert all("scale" in m for m in scaled) and not any("scale" in m for m in added)
    assert all(1 <= m["bottleneck"] <= 512 for d in designs for m in d.sites.values() if "bottleneck" in m)


def test_search_ranges_are_declared_with_the_dimensions():
    """A numeric dimension's default search range is part of its declaration; nothing else names it."""
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(60):
        trial = study.ask()
        suggest(trial, Space())
        study.tell(trial, 0.0)
    ranges = {name.split(".")[1]: (dist.low, dist.high) for t in study.trials for name, dist in t.distributions.items()
              if isinstance(dist, (optuna.distributions.IntDistribution, optuna.distributions.FloatDistribution))}
    assert ranges == {"bottleneck": dimension("bottleneck").search, "scale": dimension("scale").search}
    assert Spec().ranges == ranges and "searched: [1, 512], log scale" in dimension("bottleneck").describe()


@pytest.mark.parametrize("name", ["mam", "pa_attn_pa_ffn", "prefix_lora_ffn", "lora_ffn", "bitfit"])
def test_the_papers_methods_are_points_of_the_space(name):
    space = Space(ranges={"bottleneck": (1, 1024), "scale": (0.5, 8.0)})
    design = peft_space.preset(name)
    params = params_of(design, space)
    assert suggest(optuna.trial.FixedTrial(params), space) == design
    if name == "mam":
        assert params["attn.form"] == "softmax" and "attn.representation" not in params  # fixed by the rules
        assert params["ffn.composition"] == "scaled" and params["ffn.scale"] == 4.0


def test_restricted_values_and_sites():
    space = Space(sites=("ffn",), values={"form": ("relu",), "composition": ("add", "scaled")},
                  ranges={"bottleneck": (8, 16), "scale": (1.0, 2.0)})
    designs = sample(space, 60)
    assert all(set(d.sites) <= {"ffn"} for d in designs)
    assert {m["form"] for d in designs for m in d.sites.values()} == {"relu"}
    assert all(8 <= m["bottleneck"] <= 16 for d in designs for m in d.sites.values())
    with pytest.raises(ValueError, match="outside the search space"):
        params_of(peft_space.preset("lora_ffn"), space)


def test_a_registered_dimension_and_value_appear_without_changes_to_search(layers_dimension):
    dimension("form").register(Form("tanh", "tanh adapter", activation="tanh"))
    designs = sample(Space(sites=("ffn",)), 120)
    assert {"tanh"} <= {m["form"] for d in designs for m in d.sites.values()}
    assert {"all", "upper", "lower"} == {m["layers"] for d in designs for m in d.sites.values()}
    study_params = params_of(designs[-1], Space(sites=("ffn",)))
    assert ("ffn.layers" in study_params) == bool(designs[-1].sites)


def test_front_and_hypervolume():
    points = [(80.0, 1.0), (85.0, 5.0), (84.0, 6.0), (70.0, 0.5), (85.0, 5.0001), (60.0, 0.5)]
    assert dominates((85.0, 5.0), (84.0, 6.0)) and not dominates((80.0, 1.0), (85.0, 5.0))
    assert front(points) == [3, 0, 1]
    # strips: budget 0.5→1 at metric 70, 1→5 at 80, 5→10 at 85, above a reference metric of 50
    assert hypervolume(points, (50.0, 10.0)) == pytest.approx(0.5 * 20 + 4 * 30 + 5 * 35)
    assert hypervolume([(40.0, 1.0)], (50.0, 10.0)) == 0.0
    assert hypervolume([], (50.0, 10.0)) == 0.0


def test_a_space_that_lists_its_designs_samples_only_those_by_one_categorical():
    from optuna.trial import FixedTrial

    from search.space import DESIGN, configurations, grid, menu_label, train_params

    menus = {"attn": {"lora_attn": {"bottleneck": [4, 16]}}, "ffn": {"pa_ffn": {"bottleneck": [16]}}}
    listed = ("head only", "lora_attn:16 + pa_ffn:16", "pa_ffn:16")
    space = Space(("attn", "ffn"), menus=menus, designs=listed, train={"lr": {"values": (1e-3, 3e-3)}})
    assert [menu_label(d, space) for d in grid(space)] == list(listed)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    drawn = {menu_label(suggest(study.ask(), space), space) for _ in range(40)}
    assert drawn == set(listed)
    for design, train in configurations(space):
        params = {**params_of(design, space), **train_params(train, space)}
        assert set(params) == {DESIGN, "train.lr"} and suggest(FixedTrial(params), space) == design
    assert len(configurations(space)) == 3 * 2
