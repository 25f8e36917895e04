"""Run or resume a search: ``peft_space`` × ``trainers`` on Ray Tune, Optuna choosing, ASHA stopping.

Where things live (all under the spec's stores, nothing in Ray's temp folders that matters):
- the Optuna study (``spec.storage``, study name = search name): every design asked and how it ended;
- Ray's experiment folder ``{root}/ray/{name}`` and the spec as run (``{root}/specs/{name}.yaml``): what
  ``Tuner.restore`` needs to resume;
- MLflow (``spec.tracking_uri``): the parent run of the search and a child run per trial.

The steps are other modules' jobs: ``cluster`` connects, ``stores`` creates the schemas, ``assemble`` builds
the tuner, ``mlflow_runs`` finishes what a killed driver left running, ``conclude`` summarises, confirms and
publishes.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping

import yaml

import trainers
from peft_space import FieldError
from search import conclude
from search.assemble import recorder, search_tuner
from search.cluster import connect
from search.mlflow_runs import finish_stale
from search.report import Summary
from search.schema import Attrs, Status
from search.spec import Spec
from search.stores import create_stores, open_study

# Ray pickles these by their path here into the experiment state of searches started before ``search.assemble``
# and ``search.samplers`` existed (0.1): importable here, those searches still resume.
from search.assemble import trial_dirname as _trial_dirname  # noqa: F401
from search.samplers import make_sampler  # noqa: F401

os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "1")
os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")  # a failed trial's last report has no metric
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")  # small state, saved often


class SearchFailed(RuntimeError):
    """Every trial of a search failed: the message is the first one's error, whole."""


def run(spec: Spec, *, resume: bool = False, verbose: int = 1) -> Summary:
    """Run ``spec`` and summarise it; ``resume=True`` continues the search of that name where it stopped."""
    saved = spec.saved_path
    if saved.exists() and not resume:
        raise FieldError("name", spec.name, f"a name not used under {spec.root} (continue this one with "
                                            f"`peft-search resume {spec.name}`)")
    trainers.check_model(spec.model)  # a model transformers cannot resolve, before anything starts or is written
    if spec.trainer == "train":  # data no trial could read: one line in the driver, not every trial failing
        trainers.check_data(spec.task_def, spec.data_dir)
    if resume:
        _check_data_unchanged(spec)
    connect(spec.ray_address)  # an unreachable cluster is refused before anything is written
    saved.parent.mkdir(parents=True, exist_ok=True)
    saved.write_text(yaml.safe_dump(spec.to_dict(), sort_keys=False))
    create_stores(spec.storage, spec.tracking_uri)
    set_target(spec)
    search_tuner(spec, resume=resume, verbose=verbose).fit()
    finish_stale(recorder(spec).trial_runs(), conclude.study(spec).trials, spec.asha["max_steps"])
    summary = conclude.summarise(spec)
    if spec.confirm_seeds and summary.front:  # the front and its hypervolume again, from the medians over seeds
        summary = conclude.summarise(spec, conclude.confirm(spec, summary, verbose))
    conclude.publish_summary(spec, summary)
    _raise_if_nothing_trained(spec, summary)
    return summary


def set_target(spec: Spec) -> None:
    """The number of designs to train, kept in the study (a resume may raise it), the objectives' names
    (optuna-dashboard labels its axes with them) and, for a declared task, the hashes of its files."""
    study = open_study(spec.name, spec.storage, spec.mode)
    study.set_user_attr(Attrs.TARGET, spec.target)
    if isinstance(spec.task, Mapping) and Attrs.DATA_SHA256 not in study.user_attrs:
        study.set_user_attr(Attrs.DATA_SHA256, trainers.data_hashes(spec.task))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # set_metric_names is experimental in Optuna
        study.set_metric_names([spec.task_def.validation_metric, Attrs.BUDGET])


def _check_data_unchanged(spec: Spec) -> None:
    """A resumed search trains on the files its declared task had when it started; a changed one is named, and
    nothing runs (its trials would not be comparable with those already trained)."""
    if isinstance(spec.task, Mapping):
        recorded = open_study(spec.name, spec.storage, spec.mode).user_attrs.get(Attrs.DATA_SHA256, {})
        changed = trainers.changed_data(spec.task, recorded)
        if changed:
            raise trainers.DeclarationError(changed)


def _raise_if_nothing_trained(spec: Spec, summary: Summary) -> None:
    """A search whose every trial failed is an error, not an empty front: say why the first one failed."""
    trained = summary.counts.get(Status.COMPLETED, 0) + summary.counts.get(Status.STOPPED, 0)
    failure = conclude.first_failure(spec) if not trained else None
    if failure is not None:
        error = failure.user_attrs.get(Attrs.ERROR, "no error recorded")
        raise SearchFailed(f"every trial of {spec.name} failed; the first (trial {failure.number}) with:\n{error}")
