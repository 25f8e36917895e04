"""What a worker process holds between trials, and handing back what a finished trial left.

A reused Ray actor trains trial after trial in one process: the base model stays cached (``load_base``) and the
next trial's ``prepare`` replaces the design, so everything else a trial made (its optimiser state, activations,
batches; a failed trial's traceback with its frames) must be freed, and the memory it occupied handed back, or the
worker grows trial after trial until the node or the GPU runs out (optuna#5931: OOM in LoRA searches despite
``empty_cache``). ``release`` runs after every trial; ``usage`` is what the trial reports."""

from __future__ import annotations

import ctypes
import gc
import sys

import psutil
import torch

MB = 2**20


def release(collect: bool = True) -> dict[str, float]:
    """Hand back the memory the trial that just ended freed: its reference cycles to the garbage collector
    (``collect``), torch's CUDA cache to the GPU (where trials share one, the others can use it), glibc's freed heap to
    the system. Returns ``usage()`` afterwards.

    What a trial made, a failed one's frames included, is mostly freed by reference counting once its exception is
    gone; what sits in reference cycles waits for a full collection, which Python runs rarely: without one after each
    trial the worker drifted up ~3 MB per trial and dropped back when one ran (a 29 MB spread over trials 2–10). A full
    collection walks every object: the worker's ~440k (imports, the cached model and data) take 0.2 s on a quiet CPU,
    0.7 s on 2 busy ones. So the first collection's survivors are frozen (``gc.freeze``: no collection walks them
    again) and later ones walk only what later trials made, in under 10 ms. The price: a frozen object that later
    becomes cyclic garbage is never freed; at most what the first trial left (its design, which the next trial's
    replaces on the cached model), once. A trial stopped by ASHA skips the collection: Ray waits only 2 s for a
    stopped trial's thread before it gives up reusing the actor (TUNE_FUNCTION_THREAD_TIMEOUT_S)."""
    if collect:
        gc.collect()
        if not gc.get_freeze_count():
            gc.freeze()
    if torch.cuda.is_initialized():
        torch.cuda.empty_cache()
    _trim_heap()
    return usage()


def usage() -> dict[str, float]:
    """This process's resident memory and, where CUDA is in use, what torch's tensors occupy on the GPU and what its
    caching allocator holds (MiB)."""
    used = {"memory_rss_mb": psutil.Process().memory_info().rss / MB}
    if torch.cuda.is_initialized():
        used |= {"cuda_allocated_mb": torch.cuda.memory_allocated() / MB,
                 "cuda_reserved_mb": torch.cuda.memory_reserved() / MB}
    return used


def _trim_heap() -> None:
    """glibc keeps the heap memory a process frees, for its own reuse; in a reused Ray actor that grew the worker by
    ~27 MB per trial (tests/test_trial_memory.py). ``malloc_trim`` hands it back to the system."""
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


# glibc's, where there is one (other C libraries have no such call); looked up once, as each ctypes handle makes types
_MALLOC_TRIM = getattr(ctypes.CDLL(None), "malloc_trim", None) if sys.platform.startswith("linux") else None
