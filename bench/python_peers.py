"""The peers of bench/python-bench.ts; each run prints one JSON line.

    python3 python_peers.py pool <noop|cpu_1ms> <items> <processes>
    python3 python_peers.py celery <noop|cpu_1ms> <items> <prefork|threads> <concurrency> <redis host:port>

pool: multiprocessing.Pool(processes).map(fn, range(items)) with Python's default chunksize
(items / (4 * processes)); only the map is timed, the pool is started and warmed first.

celery: enqueues <items> tasks (apply_async, one message each) on a Redis broker (db 1) with the
Redis result backend (db 2), then starts `celery worker -P <pool> -c <concurrency>`. The window
opens when the worker's worker_ready signal fires (pool up, consuming) and closes when db 2 holds
one result key per task (DBSIZE polled every 10 ms): start-up is left out as for taskbatch, and
every result is stored in Redis as taskbatch records every item's outcome.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)


def run_pool(fn_name: str, items: int, processes: int) -> dict:
    from python_bench_tasks import FUNCTIONS

    fn = FUNCTIONS[fn_name]
    chunksize = max(1, items // (4 * processes))
    with multiprocessing.Pool(processes) as pool:
        pool.map(fn, range(processes * 4), chunksize=1)  # every process started and warm
        t0 = time.perf_counter()
        pool.map(fn, range(items), chunksize=chunksize)
        seconds = time.perf_counter() - t0
    return {"seconds": seconds, "chunksize": chunksize}


def run_celery(fn_name: str, items: int, pool: str, concurrency: int, address: str) -> dict:
    import redis

    host, port = address.rsplit(":", 1)
    broker = f"redis://{host}:{port}/1"
    backend = f"redis://{host}:{port}/2"
    results_db = redis.Redis(host=host, port=int(port), db=2)
    redis.Redis(host=host, port=int(port), db=1).flushdb()
    results_db.flushdb()
    ready_file = os.path.join(tempfile.mkdtemp(prefix="celerybench-"), "ready")
    env = dict(os.environ, BENCH_CELERY_BROKER=broker, BENCH_CELERY_BACKEND=backend, BENCH_CELERY_READY_FILE=ready_file)
    os.environ.update(env)
    from python_bench_tasks import app

    task = app.tasks[fn_name]
    t_enqueue = time.perf_counter()
    for i in range(items):
        task.apply_async(args=[i])
    enqueue_seconds = time.perf_counter() - t_enqueue

    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "python_bench_tasks", "worker", "-P", pool, "-c", str(concurrency),
         "--loglevel=warning", "--without-gossip", "--without-mingle", "--without-heartbeat"],
        cwd=HERE, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        deadline = time.time() + 60
        while not os.path.exists(ready_file):
            if worker.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"celery worker not ready (exit {worker.poll()}): {worker.stderr.read().decode()[-2000:] if worker.poll() is not None else ''}")
            time.sleep(0.005)
        time.sleep(0.01)  # let the writer finish the (tiny) file before it is read
        with open(ready_file) as f:
            ready_at = float(f.read())
        deadline = time.time() + max(300, items / 50)
        while results_db.dbsize() < items:
            if time.time() > deadline or worker.poll() is not None:
                raise RuntimeError(f"celery: {results_db.dbsize()} of {items} results after the deadline or worker exit")
            time.sleep(0.01)
        seconds = time.time() - ready_at
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(60)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
    # Every result must be a success, or the run does not count.
    succeeded = 0
    keys = list(results_db.scan_iter(match="celery-task-meta-*", count=1000))
    for start in range(0, len(keys), 1000):
        for raw in results_db.mget(keys[start : start + 1000]):
            if raw is not None and json.loads(raw).get("status") == "SUCCESS":
                succeeded += 1
    if succeeded != items:
        raise RuntimeError(f"celery {pool}: {succeeded} of {items} tasks succeeded")
    return {"seconds": seconds, "enqueueSeconds": enqueue_seconds}


if __name__ == "__main__":
    mode, fn_name, items_text = sys.argv[1:4]
    if mode == "pool":
        out = run_pool(fn_name, int(items_text), int(sys.argv[4]))
    elif mode == "celery":
        out = run_celery(fn_name, int(items_text), sys.argv[4], int(sys.argv[5]), sys.argv[6])
    else:
        sys.exit(f"unknown mode {mode!r}: use pool or celery")
    print(json.dumps(out))
