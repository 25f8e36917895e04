"""The Optuna samplers a spec can name (``search.implementations.SAMPLERS``), each made from a seed and the
number of trials that run at once. The searcher makes a fresh one per ask, seeded by the study's size, so a
resumed search draws what an uninterrupted one would have."""

from __future__ import annotations

import optuna

from search.implementations import SAMPLERS, load


def make_sampler(kind: str, concurrency: int, seed: int) -> optuna.samplers.BaseSampler:
    """The sampler ``kind`` (a key of ``SAMPLERS``), seeded."""
    return load(SAMPLERS, kind)(seed, concurrency)


def tpe(seed: int, concurrency: int) -> optuna.samplers.BaseSampler:
    """Multivariate TPE over groups of dimensions that occur together (a site's form decides which of its
    dimensions exist), with a constant liar when trials run at once (so they do not all ask for one design)."""
    return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, constant_liar=concurrency > 1)


def nsga2(seed: int, concurrency: int) -> optuna.samplers.BaseSampler:
    return optuna.samplers.NSGAIISampler(seed=seed)


def random(seed: int, concurrency: int) -> optuna.samplers.BaseSampler:
    return optuna.samplers.RandomSampler(seed=seed)


def gp(seed: int, concurrency: int) -> optuna.samplers.BaseSampler:
    return optuna.samplers.GPSampler(seed=seed)
