"""A plugin module that breaks chosen trials for real, for the reliability tests (imported by Ray's workers
through the spec's ``plugins``): a design with ``ffn.bottleneck == 13`` runs out of memory (raises), one with
``ffn.bottleneck == 11`` raises an error of several long lines (``LONG``), one with
``attn.bottleneck == 7`` trains at a learning rate of 1e20, so its loss really becomes non-finite in step 2,
before its first report (at 1e9 it took until step 3, and ASHA could stop it at step 2 first)."""

import trainers.loop

_train = trainers.loop.train
LONG = "cannot read the data:\n" + "the first line of a long reason, " * 8 + "\nand its last line, which Ray's table cuts"


def _faulty(task, design, **kwargs):
    sites = design.sites if design is not None else {}
    if sites.get("ffn", {}).get("bottleneck") == 11:
        raise RuntimeError(LONG)
    if sites.get("ffn", {}).get("bottleneck") == 13:
        raise MemoryError("simulated out of memory")
    if sites.get("attn", {}).get("bottleneck") == 7:
        kwargs["lr"] = 1e20
    return _train(task, design, **kwargs)


trainers.loop.train = _faulty
