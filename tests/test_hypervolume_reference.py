"""The hypervolume's reference per validation metric (issue 26): a search selecting on perplexity (lower is better)
measures its front from a uniform guess's perplexity, the model's vocabulary size, so the front has a positive
hypervolume that grows as a point improves; higher-is-better metrics keep the task's chance level."""

import optuna
import pytest
import transformers as T

from search import conclude
from search import spec as specs

VOCABULARY = 1000


@pytest.fixture
def model(tmp_path):
    """A local model folder: only its config is read (the vocabulary's size)."""
    T.GPT2Config(vocab_size=VOCABULARY, n_layer=1, n_embd=8, n_head=2).save_pretrained(tmp_path / "model")
    return str(tmp_path / "model")


def spec_for(task: str, model: str, tmp_path) -> specs.Spec:
    return specs.parse({"name": "hv", "task": task, "model": model, "budget_cap": 10,
                        "storage": f"sqlite:///{tmp_path}/optuna.db"})


def test_each_metric_s_reference_is_what_a_model_that_learned_nothing_scores(model, tmp_path):
    assert conclude.reference(spec_for("wmt16_en_ro", model, tmp_path)) == (float(VOCABULARY), 10.0)  # perplexity
    assert conclude.reference(spec_for("sst2", "minilm", tmp_path)) == (0.5, 10.0)  # accuracy: chance
    assert conclude.reference(spec_for("mnli", "minilm", tmp_path))[0] == pytest.approx(1 / 3)
    assert conclude.reference(spec_for("xsum", model, tmp_path))[0] == 0.0  # ROUGE-2 of no overlap


def test_a_front_of_perplexities_has_a_hypervolume_that_grows_when_a_point_improves(model, tmp_path):
    spec = spec_for("wmt16_en_ro", model, tmp_path)
    study = optuna.create_study(study_name=spec.name, storage=spec.storage, directions=["minimize", "minimize"])
    for perplexity, budget in [(50.0, 1.0), (20.0, 2.0), (30.0, 3.0), (2000.0, 0.5)]:  # the last: worse than a guess
        study.add_trial(optuna.trial.create_trial(values=[perplexity, budget],
                                                  user_attrs={"budget": budget, "design_id": f"d{budget}"}))
    summary = conclude.summarise(spec)
    assert {row.trial for row in summary.front} == {0, 1, 3}
    # strips from each front point's budget to the next one's (the cap last), each as tall as its gain on a guess
    assert summary.hypervolume == pytest.approx((2 - 1) * (VOCABULARY - 50) + (10 - 2) * (VOCABULARY - 20))
    improved = conclude.summarise(spec, confirmed={1: 10.0})
    assert improved.hypervolume == pytest.approx((2 - 1) * (VOCABULARY - 50) + (10 - 2) * (VOCABULARY - 10))
    assert improved.hypervolume > summary.hypervolume > 0


def test_a_front_of_accuracies_is_measured_from_chance_as_before(tmp_path):
    spec = spec_for("sst2", "minilm", tmp_path)
    study = optuna.create_study(study_name=spec.name, storage=spec.storage, directions=["maximize", "minimize"])
    for accuracy, budget in [(0.80, 1.0), (0.90, 4.0), (0.40, 0.5)]:  # the last: below chance, adds nothing
        study.add_trial(optuna.trial.create_trial(values=[accuracy, budget],
                                                  user_attrs={"budget": budget, "design_id": f"d{budget}"}))
    assert conclude.summarise(spec).hypervolume == pytest.approx((4 - 1) * 0.30 + (10 - 4) * 0.40)
