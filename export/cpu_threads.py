"""How many CPU threads the training and evaluation commands use when ``--threads`` is not given.

The cores this process may run on (its affinity: a container's cpuset or `taskset` narrows it), or
``OMP_NUM_THREADS`` where it is set: the usual way to share a machine between jobs. More torch threads
than the cores they get makes OpenMP's workers spin against each other: on 2 shared cores a training
step ran more than 10x slower with 2 threads than with 1 while another job ran.
"""
from __future__ import annotations

import os


def cores() -> int:
    """The CPU cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def default_threads(processes: int = 1) -> int:
    """Threads for each of ``processes`` processes sharing this machine: OMP_NUM_THREADS when it is a
    positive integer, else the cores divided among the processes (at least 1)."""
    given = os.environ.get("OMP_NUM_THREADS", "").strip()
    if given.isdigit() and int(given) > 0:
        return int(given)
    return max(1, cores() // max(1, processes))
