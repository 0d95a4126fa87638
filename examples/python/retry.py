"""A flaky dependency (what you would give Celery's autoretry_for): fail transiently, then succeed.

Item: {"order": "A-17", "failures": 2}. The first `failures` attempts raise ConnectionError,
which the worker retries with backoff (up to the batch's maxAttempts); the next one succeeds.
An item that can never succeed raises NonRetryable: it goes to the dead letters at once.
Nothing is remembered between attempts here: ctx.attempt (1, 2, ...) is the worker's count.
"""

import os
import sys

try:
    from taskbatch_handler import NonRetryable, serve, task
except ImportError:  # run from a checkout without `pip install ./handlers/python`
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "handlers", "python"))
    from taskbatch_handler import NonRetryable, serve, task


@task
def charge(item, ctx):
    if not isinstance(item, dict) or not isinstance(item.get("order"), str):
        raise NonRetryable(f'item needs "order": a string, got {item!r}')
    failures = item.get("failures", 0)
    if ctx.attempt <= failures:
        ctx.log.warn("Payment service unavailable", order=item["order"], attempt=ctx.attempt)
        raise ConnectionError(f"payment service unavailable (simulated, attempt {ctx.attempt} of {failures} failing)")
    return {"order": item["order"], "charged": True, "attempts": ctx.attempt}


if __name__ == "__main__":
    serve()
