"""I/O-bound work (what you would write with asyncio): fetch several URLs of one item concurrently.

Item: {"urls": ["https://example.com/a", ...]}. Result: {"fetched": n, "bytes": total}.
No network here: fetch_one() simulates a request with asyncio.sleep. Put aiohttp or httpx
there in real code. When the item times out or the worker stops, the library cancels this
coroutine (asyncio.CancelledError at the current await), so gather() stops every request.
"""

import asyncio
import os
import sys
import zlib

try:
    from taskbatch_handler import NonRetryable, serve, task
except ImportError:  # run from a checkout without `pip install ./handlers/python`
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "handlers", "python"))
    from taskbatch_handler import NonRetryable, serve, task


async def fetch_one(url):
    # Stand-in for `await session.get(url)`: a latency and a size derived from the URL.
    checksum = zlib.crc32(url.encode())
    await asyncio.sleep(0.01 + (checksum % 50) / 1000)
    return 1000 + checksum % 9000


@task
async def fetch(item, ctx):
    urls = item.get("urls") if isinstance(item, dict) else None
    if not isinstance(urls, list) or not all(isinstance(u, str) for u in urls):
        raise NonRetryable(f'item needs "urls": a list of strings, got {urls!r}')
    done = 0

    async def tracked(url):
        nonlocal done
        size = await fetch_one(url)
        done += 1
        ctx.progress(done / len(urls))
        return size

    sizes = await asyncio.gather(*(tracked(u) for u in urls))
    ctx.log.info("Fetched URLs", count=len(urls), bytes=sum(sizes))
    return {"fetched": len(urls), "bytes": sum(sizes)}


if __name__ == "__main__":
    serve()
