"""taskbatch_handler: write TaskBatch handlers in Python.

One file, standard library only, Python >= 3.9. It speaks the worker's stdio handler protocol
(version 1, docs/handler-protocol.md): newline-delimited JSON frames on stdin and stdout.

    from taskbatch_handler import task, serve

    @task
    def square(x):
        return x * x

    if __name__ == "__main__":
        serve()

Copy this file next to your code or `pip install ./handlers/python`. docs/python.md has the API.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import math
import os
import queue
import sys
import threading
import time
import traceback
from typing import Any, Callable, Dict, Optional

__all__ = ["task", "serve", "NonRetryable", "Context", "PROTOCOL"]
__version__ = "1.0.0"

PROTOCOL = 1

_LEVELS = ("debug", "info", "warn", "error")


class NonRetryable(Exception):
    """Raise this to fail an item for good: it is dead-lettered without another attempt."""


class _Task:
    def __init__(self, name: str, fn: Callable[..., Any]) -> None:
        self.name = name
        self.fn = fn
        self.is_async = inspect.iscoroutinefunction(fn)
        params = inspect.signature(fn).parameters
        self.ctx_keyword = "ctx" in params and params["ctx"].kind in (
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
            inspect.Parameter.KEYWORD_ONLY,
        )
        positional = [
            p
            for p in params.values()
            if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        ]
        # Payload mode passes (payload) or (payload, ctx): a second positional parameter is the
        # context even when it is not called ctx (like the JS handler signature (item, ctx)).
        self.ctx_second = not self.ctx_keyword and len(positional) >= 2
        self.takes_payload = len(positional) >= 1 or any(
            p.kind == inspect.Parameter.VAR_POSITIONAL for p in params.values()
        )


_tasks: Dict[str, _Task] = {}


def task(fn: Optional[Callable[..., Any]] = None, *, name: Optional[str] = None) -> Any:
    """Registers a function (sync or `async def`) as a task, by its name or `name=`.

    Usable bare (`@task`) or with arguments (`@task(name="resize")`). Returns the function
    unchanged, so it stays callable (and testable) as plain Python.
    """

    def register(f: Callable[..., Any]) -> Callable[..., Any]:
        if not callable(f):
            raise TypeError(f"@task needs a function, got {type(f).__name__}")
        task_name = name if name is not None else getattr(f, "__name__", None)
        if not isinstance(task_name, str) or task_name == "" or task_name.startswith("_"):
            raise ValueError(
                f"task name {task_name!r} is invalid: use a non-empty name not starting with '_' "
                "(remote calls refuse such names)"
            )
        if task_name in _tasks and _tasks[task_name].fn is not f:
            raise ValueError(f"task {task_name!r} is registered twice: give one of them @task(name=...)")
        _tasks[task_name] = _Task(task_name, f)
        return f

    if fn is not None:
        return register(fn)
    return register


class _Cancel(Exception):
    """Why a running item was stopped: becomes its error frame."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)
        self.name = name
        self.message = message


class _Log:
    def __init__(self, ctx: "Context") -> None:
        self._ctx = ctx

    def debug(self, message: str, **fields: Any) -> None:
        self._ctx._log("debug", message, fields)

    def info(self, message: str, **fields: Any) -> None:
        self._ctx._log("info", message, fields)

    def warn(self, message: str, **fields: Any) -> None:
        self._ctx._log("warn", message, fields)

    warning = warn

    def error(self, message: str, **fields: Any) -> None:
        self._ctx._log("error", message, fields)


class Context:
    """What a task learns about the item it runs, and how it reports back.

    id, attempt (1 for the first run), deadline (time.monotonic() seconds, or None without a
    timeout), cancelled (a threading.Event set on a cancel frame or when the deadline passes),
    progress(value in 0..1), log.debug/info/warn/error(message, **fields).
    """

    def __init__(self, server: "_Server", item_id: str, attempt: int, deadline: Optional[float]) -> None:
        self.id = item_id
        self.attempt = attempt
        self.deadline = deadline
        self.cancelled = threading.Event()
        self.log = _Log(self)
        self._server = server
        self._cancel: Optional[_Cancel] = None
        self._lock = threading.Lock()
        self._async_task: Optional["asyncio.Task[Any]"] = None
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._open = True

    def progress(self, value: float) -> None:
        """Reports progress, a number from 0 to 1."""
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0 <= value <= 1):
            raise ValueError(f"ctx.progress() takes a number from 0 to 1, got {value!r}")
        self._send({"type": "progress", "id": self.id, "value": value})

    def remaining(self) -> Optional[float]:
        """Seconds left before the deadline (never negative), or None without a timeout."""
        return None if self.deadline is None else max(0.0, self.deadline - time.monotonic())

    def _log(self, level: str, message: str, fields: Dict[str, Any]) -> None:
        frame: Dict[str, Any] = {"type": "log", "id": self.id, "level": level, "message": str(message)}
        if fields:
            # Fields are best effort: something JSON cannot carry is logged as its repr().
            frame["fields"] = {key: _json_or_repr(value) for key, value in fields.items()}
        self._send(frame)

    def _send(self, frame: Dict[str, Any]) -> None:
        # After the answer, a frame for this id would be a protocol error (the worker kills the
        # process): a thread the task left behind reports to stderr instead.
        if not self._server.send_for(self, frame):
            print(f"taskbatch_handler: item {self.id} already answered, dropped: {json.dumps(frame)[:200]}", file=sys.stderr)

    def _stop(self, name: str, message: str) -> None:
        with self._lock:
            if self._cancel is None:
                self._cancel = _Cancel(name, message)
            self.cancelled.set()
            task, loop = self._async_task, self._loop
        if task is not None and loop is not None:
            loop.call_soon_threadsafe(task.cancel)


_EOF = object()


class _DeadlineWatch:
    """Stops the running item when its deadline passes.

    One long-lived thread rather than a threading.Timer per item: starting a thread per item made
    50,000 no-op items with a timeout take 16-22 s instead of 3.5 s on a loaded 2-core machine.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._armed: Optional[Any] = None  # (ctx, deadline, message)
        self._thread: Optional[threading.Thread] = None

    def arm(self, ctx: Context, deadline: float, message: str) -> None:
        with self._cond:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="taskbatch-deadline", daemon=True)
                self._thread.start()
            self._armed = (ctx, deadline, message)
            self._cond.notify()

    def disarm(self) -> None:
        with self._cond:
            self._armed = None
            self._cond.notify()

    def _run(self) -> None:
        with self._cond:
            while True:
                if self._armed is None:
                    self._cond.wait()
                    continue
                ctx, deadline, message = self._armed
                left = deadline - time.monotonic()
                if left > 0:
                    self._cond.wait(left)
                    continue
                self._armed = None
                ctx._stop("TimeoutError", message)


class _Server:
    def __init__(self, out_fd: int) -> None:
        self._out = os.fdopen(out_fd, "wb", buffering=0)
        self._write_lock = threading.Lock()
        self._inbox: "queue.Queue[Any]" = queue.Queue()
        self._running: Optional[Context] = None
        # A cancel can overtake its item (read while the item still waits in the inbox).
        self._early_cancels: Dict[str, Any] = {}
        self._queued: set = set()
        self._cancel_lock = threading.Lock()
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._deadlines = _DeadlineWatch()

    def write(self, frame: Dict[str, Any]) -> None:
        data = frame_bytes(frame)
        with self._write_lock:
            self._out.write(data)

    def send_for(self, ctx: Context, frame: Dict[str, Any]) -> bool:
        with self._write_lock:
            if not ctx._open:
                return False
            self._out.write(frame_bytes(frame))
            return True

    def answer(self, ctx: Context, frame: Dict[str, Any], encoded: Optional[bytes] = None) -> None:
        """The item's last frame: nothing for its id may follow."""
        data = encoded if encoded is not None else frame_bytes(frame)
        with self._write_lock:
            ctx._open = False
            self._out.write(data)

    def read_stdin(self, stdin: Any) -> None:
        # A thread of its own, so a cancel frame arrives while a synchronous task runs.
        for raw in stdin:
            line = raw.strip()
            if not line:
                continue
            try:
                frame = json.loads(line)
            except ValueError as exc:
                print(f"taskbatch_handler: ignored a stdin line that is not JSON ({exc}): {line[:200]!r}", file=sys.stderr)
                continue
            if isinstance(frame, dict) and frame.get("type") == "cancel":
                reason = frame.get("reason") if isinstance(frame.get("reason"), dict) else {}
                name = str(reason.get("name") or "Cancelled")
                message = str(reason.get("message") or "the worker cancelled the item")
                stop = ("TimeoutError", message) if name == "TimeoutError" else ("Cancelled", f"{name}: {message}")
                with self._cancel_lock:
                    running = self._running
                    if running is not None and running.id == frame.get("id"):
                        running._stop(*stop)
                    elif frame.get("id") in self._queued:
                        self._early_cancels[frame.get("id")] = stop
                # else: a cancel for an item already answered, nothing to stop
                continue
            if isinstance(frame, dict) and frame.get("type") == "item":
                with self._cancel_lock:
                    self._queued.add(frame.get("id"))
            self._inbox.put(frame)
        self._inbox.put(_EOF)

    def serve(self) -> None:
        self.write({"type": "ready", "protocol": PROTOCOL})
        while True:
            frame = self._inbox.get()
            if frame is _EOF:
                return
            if not isinstance(frame, dict) or frame.get("type") != "item":
                print(f"taskbatch_handler: ignored a frame that is not an item: {json.dumps(frame)[:200]}", file=sys.stderr)
                continue
            self.run_item(frame)

    def run_item(self, frame: Dict[str, Any]) -> None:
        item_id = str(frame.get("id"))
        attempt = frame.get("attempt") if isinstance(frame.get("attempt"), int) else 1
        timeout_ms = frame.get("timeoutMs")
        deadline = time.monotonic() + timeout_ms / 1000 if isinstance(timeout_ms, (int, float)) and timeout_ms > 0 else None
        ctx = Context(self, item_id, attempt, deadline)
        if frame.get("protocol", PROTOCOL) != PROTOCOL:
            with self._cancel_lock:
                self._queued.discard(frame.get("id"))
                self._early_cancels.pop(frame.get("id"), None)
            self.answer(ctx, error_frame(item_id, "ProtocolError", f"item frame has protocol {frame.get('protocol')!r}, this library speaks {PROTOCOL}", False))
            return
        if deadline is not None:
            self._deadlines.arm(ctx, deadline, f"item {item_id} timed out after {timeout_ms} ms")
        with self._cancel_lock:
            self._queued.discard(frame.get("id"))
            self._running = ctx
            early = self._early_cancels.pop(frame.get("id"), None)
        if early is not None:
            ctx._stop(*early)
        try:
            answer = self.call(ctx, frame.get("payload"))
        finally:
            with self._cancel_lock:
                self._running = None
            if deadline is not None:
                self._deadlines.disarm()
        if isinstance(answer, bytes):
            self.answer(ctx, {}, answer)
        else:
            self.answer(ctx, answer)

    def call(self, ctx: Context, payload: Any) -> Any:
        """The item's answer: an error frame, or a result frame already encoded (encoding is the check)."""
        try:
            target, args, kwargs = resolve(payload, ctx)
        except NonRetryable as exc:
            return error_frame(ctx.id, "NonRetryable", str(exc), False)  # the item is wrong, not the code: no stack
        try:
            if target.is_async:
                result = self.run_async(ctx, target.fn(*args, **kwargs))
            else:
                result = target.fn(*args, **kwargs)
                if inspect.isawaitable(result):  # an async function behind a plain wrapper (partial, decorator)
                    result = self.run_async(ctx, result)
        except NonRetryable as exc:
            return error_frame(ctx.id, type(exc).__name__, str(exc), False, traceback.format_exc())
        except BaseException as exc:  # noqa: BLE001 - every failure becomes the item's error frame
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            if ctx._cancel is not None:
                return error_frame(ctx.id, ctx._cancel.name, ctx._cancel.message, True)
            return error_frame(ctx.id, type(exc).__name__, str(exc), True, traceback.format_exc())
        if ctx._cancel is not None:
            # Stopped: the worker gave up on this attempt, so a late result is not one.
            return error_frame(ctx.id, ctx._cancel.name, ctx._cancel.message, True)
        if result is None:
            return {"type": "result", "id": ctx.id}
        try:
            return frame_bytes({"type": "result", "id": ctx.id, "result": result})
        except (TypeError, ValueError, RecursionError) as exc:
            return error_frame(
                ctx.id,
                "ResultNotSerializable",
                f"task returned a {type(result).__module__}.{type(result).__qualname__}, which is not JSON-serializable: {exc}",
                False,
            )

    def run_async(self, ctx: Context, coro: Any) -> Any:
        # One loop for the life of the process, so clients a task keeps (connection pools) survive.
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
        loop = self._loop
        atask = asyncio.ensure_future(coro, loop=loop)
        with ctx._lock:
            ctx._async_task, ctx._loop = atask, loop
            already = ctx._cancel is not None
        if already:
            atask.cancel()
        return loop.run_until_complete(atask)


def _json_or_repr(value: Any) -> Any:
    try:
        return json.loads(json.dumps(value, default=repr, allow_nan=False))
    except (TypeError, ValueError, RecursionError):
        return repr(value)


def frame_bytes(frame: Dict[str, Any]) -> bytes:
    return json.dumps(frame, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8") + b"\n"


def error_frame(item_id: str, name: str, message: str, retryable: bool, stack: Optional[str] = None) -> Dict[str, Any]:
    error: Dict[str, Any] = {"name": name, "message": message, "retryable": retryable}
    if stack:
        error["stack"] = stack
    return {"type": "error", "id": item_id, "error": error}


def resolve(payload: Any, ctx: Context) -> Any:
    """The task an item names and its arguments (dispatch rules: docs/python.md)."""
    if isinstance(payload, dict) and "fn" in payload:
        # A remote call ({"reply": ..., "fn": "square", "args": [4]} from the SDK or `taskbatch
        # call`) or a hand-written {"fn", "args", "kwargs"} item.
        fn_name = payload["fn"]
        target = _tasks.get(fn_name) if isinstance(fn_name, str) else None
        if target is None:
            raise NonRetryable(f"no task named {fn_name!r}; tasks: {', '.join(sorted(_tasks))}")
        args = payload.get("args", [])
        kwargs = payload.get("kwargs", {})
        if not isinstance(args, list):
            raise NonRetryable(f'item "args" must be a list, got {type(args).__name__}')
        if not isinstance(kwargs, dict):
            raise NonRetryable(f'item "kwargs" must be an object, got {type(kwargs).__name__}')
        kwargs = dict(kwargs)
        if target.ctx_keyword:
            kwargs["ctx"] = ctx
        return target, list(args), kwargs
    if len(_tasks) != 1:
        raise NonRetryable(
            f'{len(_tasks)} tasks are registered ({", ".join(sorted(_tasks))}): the item must name one, '
            f'{{"fn": "<task>", "args": [...], "kwargs": {{...}}}}; got {json.dumps(payload)[:200]}'
        )
    target = next(iter(_tasks.values()))
    if target.ctx_keyword:
        return target, [payload], {"ctx": ctx}
    if target.ctx_second:
        return target, [payload, ctx], {}
    return target, ([payload] if target.takes_payload else []), {}


def serve() -> None:
    """Answers items until stdin ends, then returns (the script exits 0).

    Frames go to the process's original stdout; from here on file descriptor 1 and sys.stdout
    point at stderr, so print() and child processes cannot corrupt the protocol.
    """
    if not _tasks:
        print("taskbatch_handler: no task registered: decorate a function with @task before calling serve()", file=sys.stderr)
        sys.exit(2)
    sys.stdout.flush()
    out_fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    server = _Server(out_fd)
    reader = threading.Thread(target=server.read_stdin, args=(sys.stdin.buffer,), name="taskbatch-stdin", daemon=True)
    reader.start()
    try:
        server.serve()
    except SystemExit as exc:  # sys.exit() in a task ends the process, as it would without the library
        if exc.code is not None and not isinstance(exc.code, int):
            print(exc.code, file=sys.stderr)
        _exit_now(exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1))
    except KeyboardInterrupt:
        _exit_now(130)
    except BaseException:  # noqa: BLE001 - a bug here must end the process, not hang it
        traceback.print_exc()
        _exit_now(70)


def _exit_now(code: int) -> None:
    # Not a normal interpreter exit: with the reader thread blocked on stdin, finalisation
    # aborts ("could not acquire lock for <stdin>") or waits for the worker to close stdin.
    sys.stderr.flush()
    os._exit(code)


def _main(argv: Any) -> None:
    # `python3 taskbatch_handler.py app.py`: load app.py (its @task functions) and serve it.
    if len(argv) != 2:
        print("usage: python3 taskbatch_handler.py PATH/TO/tasks.py", file=sys.stderr)
        sys.exit(2)
    import runpy

    # This file runs as __main__: make `import taskbatch_handler` in the app return this very
    # module, else the app would register its tasks in a second copy.
    sys.modules.setdefault("taskbatch_handler", sys.modules[__name__])
    runpy.run_path(argv[1], run_name="taskbatch_app")
    serve()


if __name__ == "__main__":
    _main(sys.argv)
