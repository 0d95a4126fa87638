"""Pyro5 peer for bench/sdk-calls.ts: serves square(x) over loopback, and calls it.

    python pyro5_square.py serve [--threads N]
        Serves on 127.0.0.1 (free port, no name server) with Pyro5's default server type
        ("thread": one pool thread per connected proxy); prints {"uri", "pid"} on one line.
        The pool is raised to N threads (default 1100): a threaded Pyro5 server refuses
        connections beyond its pool, and the largest scenario holds 1,000 proxies open.
    python pyro5_square.py call --uri URI --server-pid PID [--callers 1,10,100,1000]
                                [--seconds 5] [--start-reps 200]
        Runs the same scenarios as the taskbatch rows and prints one JSON line each:
        {scenario, callers, calls, seconds, p50, p90, p99, max, serverCpuUs, clientCpuUs}
        (latencies in ms). C concurrent callers are C threads, each with its own proxy: Pyro5
        proxies belong to one thread, and a proxy per thread is the idiomatic way to call
        concurrently. "start" measures, on an idle server, from just before a call until the
        server's method started (both read CLOCK_MONOTONIC), after random 5-50 ms gaps.
"""

import argparse
import json
import os
import random
import sys
import threading
import time

import Pyro5.api
import Pyro5  # Pyro5.config is the global config object


@Pyro5.api.expose
class Square:
    def square(self, x):
        return x * x

    def started_at_ns(self):
        # CLOCK_MONOTONIC, the clock the caller reads too: comparable across processes.
        return time.monotonic_ns()


TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")


def cpu_us(pid):
    """CPU time of a process in µs: utime + stime of /proc/<pid>/stat, which (unlike the
    per-thread schedstat) keeps the time of threads that have ended."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1e6 / TICKS_PER_SECOND


def percentile(sorted_ms, p):
    if not sorted_ms:
        return float("nan")
    return sorted_ms[min(len(sorted_ms) - 1, int(p / 100 * len(sorted_ms)))]


def serve(threads):
    Pyro5.config.SERVERTYPE = "thread"
    Pyro5.config.THREADPOOL_SIZE = max(Pyro5.config.THREADPOOL_SIZE, threads)
    daemon = Pyro5.api.Daemon(host="127.0.0.1", port=0)
    uri = daemon.register(Square(), "square")
    print(json.dumps({"uri": str(uri), "pid": os.getpid(), "serverType": Pyro5.config.SERVERTYPE, "threadpool": Pyro5.config.THREADPOOL_SIZE}), flush=True)
    daemon.requestLoop()


def closed_loop(uri, callers, seconds):
    lats = [[] for _ in range(callers)]
    start = [0.0]
    # The clock starts once every thread has connected (1,000 connections take a while).
    ready = threading.Barrier(callers + 1, action=lambda: start.__setitem__(0, time.perf_counter()))

    def run(k):
        proxy = Pyro5.api.Proxy(uri)
        proxy._pyroBind()
        ready.wait()
        out = lats[k]
        i = k
        until = start[0] + seconds
        while time.perf_counter() < until:
            t = time.perf_counter_ns()
            proxy.square(i)
            out.append((time.perf_counter_ns() - t) / 1e6)
            i += 1
        proxy._pyroRelease()

    threads = [threading.Thread(target=run, args=(k,)) for k in range(callers)]
    for t in threads:
        t.start()
    ready.wait()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start[0]
    return [x for out in lats for x in out], wall


def start_latency(uri, reps):
    lat = []
    with Pyro5.api.Proxy(uri) as proxy:
        proxy._pyroBind()
        for _ in range(reps):
            time.sleep(random.uniform(0.005, 0.050))
            t0 = time.monotonic_ns()
            started = proxy.started_at_ns()
            lat.append((started - t0) / 1e6)
    return lat


def report(scenario, callers, lat, seconds, server_cpu, client_cpu):
    lat.sort()
    print(
        json.dumps(
            {
                "scenario": scenario,
                "callers": callers,
                "calls": len(lat),
                "seconds": seconds,
                "p50": percentile(lat, 50),
                "p90": percentile(lat, 90),
                "p99": percentile(lat, 99),
                "max": lat[-1] if lat else float("nan"),
                "serverCpuUs": server_cpu,
                "clientCpuUs": client_cpu,
            }
        ),
        flush=True,
    )


def call(uri, server_pid, callers, seconds, start_reps):
    closed_loop(uri, 10, 0.5)  # warm up: connections, pool threads
    for c in callers:
        s0, c0 = cpu_us(server_pid), cpu_us(os.getpid())
        lat, wall = closed_loop(uri, c, seconds)
        report("closed", c, lat, wall, cpu_us(server_pid) - s0, cpu_us(os.getpid()) - c0)
    if start_reps > 0:
        time.sleep(0.5)
        s0, c0, t0 = cpu_us(server_pid), cpu_us(os.getpid()), time.perf_counter()
        lat = start_latency(uri, start_reps)
        report("start", 1, lat, time.perf_counter() - t0, cpu_us(server_pid) - s0, cpu_us(os.getpid()) - c0)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="mode", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--threads", type=int, default=1100)
    c = sub.add_parser("call")
    c.add_argument("--uri", required=True)
    c.add_argument("--server-pid", type=int, required=True)
    c.add_argument("--callers", default="1,10,100,1000")
    c.add_argument("--seconds", type=float, default=5.0)
    c.add_argument("--start-reps", type=int, default=200)
    a = p.parse_args()
    if a.mode == "serve":
        serve(a.threads)
    else:
        call(a.uri, a.server_pid, [int(x) for x in a.callers.split(",")], a.seconds, a.start_reps)
    return 0


if __name__ == "__main__":
    sys.exit(main())
