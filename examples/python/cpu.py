"""CPU-bound work (what you would hand to multiprocessing.Pool): count the primes below n.

Item: {"below": 2000000}. Result: {"below": ..., "primes": ...}.
The worker runs one Python process per executor slot (TASKBATCH_POOL_MODE=process), so a pool
of N slots keeps N cores busy with no multiprocessing code here. The loop checks ctx.cancelled
now and then: a synchronous task cannot be interrupted, it stops when it looks.
"""

import os
import sys

try:
    from taskbatch_handler import NonRetryable, serve, task
except ImportError:  # run from a checkout without `pip install ./handlers/python`
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "handlers", "python"))
    from taskbatch_handler import NonRetryable, serve, task


@task
def count_primes(item, ctx):
    below = item.get("below") if isinstance(item, dict) else None
    if not isinstance(below, int) or below < 2 or below > 100_000_000:
        raise NonRetryable(f'item needs "below": an integer from 2 to 100000000, got {below!r}')
    sieve = bytearray([1]) * below
    sieve[0:2] = b"\x00\x00"
    p = 2
    reported = 0.0
    while p * p < below:
        if ctx.cancelled.is_set():
            return None  # answered as the cancellation's error, not as a result
        if sieve[p]:
            sieve[p * p :: p] = bytes(len(range(p * p, below, p)))
            done = min(1.0, (p * p) / below)
            if done - reported >= 0.05:  # a frame per 5 %, not per prime
                ctx.progress(done)
                reported = done
        p += 1
    count = sum(sieve)
    ctx.log.info("Counted primes", below=below, primes=count)
    return {"below": below, "primes": count}


if __name__ == "__main__":
    serve()
