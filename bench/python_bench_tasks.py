"""The two Python functions of bench/python-bench.ts, in one file for all three systems.

- taskbatch: `python3 python_bench_tasks.py` serves them as a stdio handler (items are
  {"fn": "noop" | "cpu_1ms", "args": [i]}).
- Celery: `celery -A python_bench_tasks worker ...` with BENCH_CELERY_BROKER set (broker and
  result backend on the bench's redis-server); the worker writes its ready time to
  BENCH_CELERY_READY_FILE so the driver can leave start-up out, as the taskbatch timing does.
- multiprocessing.Pool: bench/python_peers.py imports FUNCTIONS.
"""

from __future__ import annotations

import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "handlers", "python"))


def noop(i=None):
    return None


def cpu_1ms(i=None):
    # A busy loop, not a sleep: it holds a core for 1 ms like real CPU-bound work.
    end = time.perf_counter() + 0.001
    while time.perf_counter() < end:
        pass
    return None


FUNCTIONS = {"noop": noop, "cpu_1ms": cpu_1ms}

if os.environ.get("BENCH_CELERY_BROKER"):
    from celery import Celery
    from celery.signals import worker_ready

    app = Celery(
        "python_bench_tasks",
        broker=os.environ["BENCH_CELERY_BROKER"],
        backend=os.environ["BENCH_CELERY_BACKEND"],
    )
    app.conf.update(worker_hijack_root_logger=False, broker_connection_retry_on_startup=True)
    for _name, _fn in FUNCTIONS.items():
        app.task(name=_name)(_fn)

    @worker_ready.connect
    def _note_ready(**_kwargs):
        # Written after the pool is up and consumers started: the start of the timed window.
        with open(os.environ["BENCH_CELERY_READY_FILE"], "w") as f:
            f.write(repr(time.time()))


if __name__ == "__main__":
    from taskbatch_handler import serve, task

    for _fn in FUNCTIONS.values():
        task(_fn)
    serve()
