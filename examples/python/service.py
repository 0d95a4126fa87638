"""A service of functions called remotely (what you would expose with Pyro): several @task functions.

Run it as an open batch's handler; call it from the SDK or the CLI:
    taskbatch call math-service square 12            -> 144
    taskbatch call math-service add 2 3              -> 5
    taskbatch call math-service stats '[1, 2, 3]'    -> {"count": 3, "mean": 2.0, ...}
Each call is an item {"fn": "square", "args": [12]}; the library calls the task by name.
"""

import asyncio
import os
import statistics
import sys

try:
    from taskbatch_handler import NonRetryable, serve, task
except ImportError:  # run from a checkout without `pip install ./handlers/python`
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "handlers", "python"))
    from taskbatch_handler import NonRetryable, serve, task


@task
def square(x):
    return x * x


@task
def add(a, b):
    return a + b


@task
def stats(values):
    if not isinstance(values, list) or not values:
        raise NonRetryable("stats() needs a non-empty list of numbers")
    return {"count": len(values), "mean": statistics.fmean(values), "min": min(values), "max": max(values)}


@task(name="slowEcho")
async def slow_echo(value, ms=10, ctx=None):
    await asyncio.sleep(ms / 1000)
    return value


if __name__ == "__main__":
    serve()
