"""Tuning of the worker process: glibc's mmap threshold, the garbage collector, thread and process
priority.

Why: glibc serves an allocation of at least the "mmap threshold" (128 KiB at start) with its own
``mmap``, returned to the OS on ``free``. But the threshold rises to the size of the largest such
block freed (up to 32 MiB), and from then on those blocks come from the heap. The worker frees
large buffers all the time (fetched record batches, serving batches' tensors) between small
long-lived objects, so its heap fragments and the RSS grows with freed memory that glibc keeps
(``malloc_trim`` gave most of it back in a probe). Fixing the threshold
(``mallopt(M_MMAP_THRESHOLD)``, which also stops it from rising) keeps those blocks out of the
heap (BENCHMARKS.md, "Worker memory": the soak's RSS with glibc's default and with 128 KiB).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
import os
import threading

log = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3  # glibc <malloc.h>


def set_mmap_threshold(kib: int) -> bool:
    """Serve allocations of at least ``kib`` KiB with mmap from now on (glibc only; ``kib`` 0 or
    another C library: nothing changes). Returns whether the setting took effect."""
    if kib <= 0:
        return False
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):
        log.info("malloc tuning skipped: this C library has no mallopt")
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    if mallopt(M_MMAP_THRESHOLD, kib * 1024) != 1:
        log.warning("mallopt(M_MMAP_THRESHOLD, %d KiB) was refused; glibc's default stays", kib)
        return False
    return True


def freeze_long_lived() -> None:
    """Move every object alive now out of the garbage collector's reach (``gc.freeze``).

    Why: a full (generation 2) collection walks every tracked object, and a worker holds many for
    good: importing torch, Faust and StreamRec alone leaves ~220,000, whose full collection takes
    ~100 ms on the 2-core box; then come the served model's vocabulary and id maps. A probe of the
    worker in ``bench/throughput.py`` (gc callbacks timing each collection) saw 14 of them in
    2.5 minutes, each stopping the process for 120-170 ms; with the objects frozen at start-up
    and after each swap, those after start-up took 1-5 ms. Frozen objects are still freed when
    their reference count drops to zero (a replaced model goes as soon as nothing serves it:
    tests/unit/test_live_model.py); only reference cycles among them would stay, which is why
    this runs at start-up and after a model swap, not on objects that come and go."""
    gc.freeze()


def lower_thread_priority(niceness: int = 10) -> None:
    """Background work (swaps, training) yields the CPU to serving and ingestion (Linux: a
    thread has its own nice value; elsewhere this does nothing)."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), niceness)
    except (AttributeError, OSError):
        pass


def background_process(pid: int, priority: str = "idle", niceness: int = 10) -> str:
    """Put process ``pid`` in the background: ``idle`` (Linux ``SCHED_IDLE``: it runs only when
    nothing else wants the CPU, and any other waking task preempts it) or ``low`` (nice +``niceness``).
    Set right after the process starts, its threads inherit it. Returns what took effect ("idle",
    "low" or "none")."""
    if priority == "idle" and hasattr(os, "SCHED_IDLE"):
        try:
            os.sched_setscheduler(pid, os.SCHED_IDLE, os.sched_param(0))
            return "idle"
        except OSError as exc:
            log.info("SCHED_IDLE refused for process %d (%s); nice +%d instead", pid, exc, niceness)
    try:
        os.setpriority(os.PRIO_PROCESS, pid, os.getpriority(os.PRIO_PROCESS, pid) + niceness)
        return "low"
    except (AttributeError, OSError):
        return "none"
