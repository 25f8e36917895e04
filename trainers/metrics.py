"""Task metrics through the libraries the field uses: rouge-score for ROUGE, sacrebleu for BLEU.

Each metric comes with its standard error (``accuracy_se``, ``macro_f1_se``, ``exact_match_se``, ``rouge2_se``,
``bleu_se``): the spread of the number over resamples of the evaluation set, so that a difference smaller than a
few of them is read as noise.
"""

from __future__ import annotations

import math
import random
import statistics
import unicodedata
from collections.abc import Callable
from typing import Any

SE = "_se"  # a metric's standard error is reported under its name + SE
PREDICTED_SHARE = "predicted_share"  # of a classification split: the share of its most-predicted class (1.0: one class)
BOOTSTRAP = 200  # resamples for corpus-level metrics (BLEU) that have no closed-form standard error
# what an evaluation computes from the model's scores of the given targets (the loss, its exponential and the
# argmax label's accuracy); any other metric (ROUGE, BLEU) is computed on generated text
WITHOUT_GENERATION = ("loss", "perplexity", "accuracy")


def mean_se(values: list[float]) -> float:
    """Standard error of the mean of per-example scores."""
    return statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else 0.0


def accuracy(predictions: list[Any], references: list[Any]) -> dict[str, float]:
    hits = [float(p == r) for p, r in zip(predictions, references)]
    return {"accuracy": sum(hits) / max(1, len(hits)), "accuracy" + SE: mean_se(hits)}


def macro_f1(predictions: list[Any], references: list[Any]) -> dict[str, float]:
    """Unweighted mean of the per-class F1 over the classes the references or predictions hold (scikit-learn's
    ``average="macro"``): a majority-class guess scores low on
    imbalanced data, where its accuracy looks good. Its standard error: the spread over seeded bootstrap resamples."""

    def score(picked: list[int]) -> float:
        pairs = [(predictions[i], references[i]) for i in picked]
        classes = {label for pair in pairs for label in pair}
        f1 = [2 * sum(p == r == c for p, r in pairs) / (sum(p == c for p, _ in pairs) + sum(r == c for _, r in pairs))
              for c in classes]
        return sum(f1) / max(1, len(f1))

    return {"macro_f1": score(list(range(len(predictions)))), "macro_f1" + SE: _bootstrap_se(score, len(predictions))}


def exact_match(predictions: list[str], references: list[str]) -> dict[str, float]:
    """Share of generated texts equal to their reference once surrounding and repeated whitespace are
    dropped (decoding spaces tokens differently from how the reference was written)."""
    hits = [float(" ".join(p.split()) == " ".join(r.split())) for p, r in zip(predictions, references)]
    return {"exact_match": sum(hits) / max(1, len(hits)), "exact_match" + SE: mean_se(hits)}


def rouge(predictions: list[str], references: list[str]) -> dict[str, float]:
    """Mean ROUGE-1/2/L F1 (×100) with Porter stemming, as the paper reports for XSum."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    scores = [scorer.score(r, p) for p, r in zip(predictions, references)]
    metrics = {}
    for key in ("rouge1", "rouge2", "rougeL"):
        values = [100 * s[key].fmeasure for s in scores]
        metrics |= {key: sum(values) / max(1, len(values)), key + SE: mean_se(values)}
    return metrics


def normalise(text: str) -> str:
    """Lower-case and strip diacritics. An uncased tokenizer (MiniLM's) loses both, so the trainer scores
    its outputs against references treated the same way (and records that it did: such a BLEU is not
    comparable with cased, accented BLEU)."""
    decomposed = unicodedata.normalize("NFKD", text.lower())
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def bleu(predictions: list[str], references: list[str]) -> dict[str, float]:
    """Corpus BLEU; its standard error is the spread over seeded bootstrap resamples of the sentences."""
    import sacrebleu

    def score(picked: list[int]) -> float:
        return sacrebleu.corpus_bleu([predictions[i] for i in picked], [[references[i] for i in picked]]).score

    return {"bleu": score(list(range(len(predictions)))), "bleu" + SE: _bootstrap_se(score, len(predictions))}


def _bootstrap_se(score: Callable[[list[int]], float], n: int) -> float:
    """The spread of a corpus-level ``score`` (of example indices) over ``BOOTSTRAP`` seeded resamples."""
    draw = random.Random(0)
    resampled = [score([draw.randrange(n) for _ in range(n)]) for _ in range(BOOTSTRAP if n > 1 else 0)]
    return statistics.stdev(resampled) if resampled else 0.0
