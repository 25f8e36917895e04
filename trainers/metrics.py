"""Task metrics through the libraries the field uses: rouge-score for ROUGE, sacrebleu for BLEU."""

from __future__ import annotations

import unicodedata
from typing import Any


def accuracy(predictions: list[Any], references: list[Any]) -> dict[str, float]:
    correct = sum(int(p == r) for p, r in zip(predictions, references))
    return {"accuracy": correct / max(1, len(references))}


def rouge(predictions: list[str], references: list[str]) -> dict[str, float]:
    """Mean ROUGE-1/2/L F1 (×100) with Porter stemming, as the paper reports for XSum."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    scores = [scorer.score(r, p) for p, r in zip(predictions, references)]
    return {k: 100 * sum(s[k].fmeasure for s in scores) / max(1, len(scores)) for k in ("rouge1", "rouge2", "rougeL")}


def normalise(text: str) -> str:
    """Lower-case and strip diacritics. An uncased tokenizer (MiniLM's) loses both, so the trainer scores
    its outputs against references treated the same way (and records that it did: such a BLEU is not
    comparable with cased, accented BLEU)."""
    decomposed = unicodedata.normalize("NFKD", text.lower())
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def bleu(predictions: list[str], references: list[str]) -> dict[str, float]:
    import sacrebleu

    return {"bleu": sacrebleu.corpus_bleu(predictions, [references]).score}
