"""A faithful fake of Hugging Face's `spaces` package on a ZeroGPU Space, for tests (put tests/fake_spaces first on
the path, or hand this module to app.spaces_compat).

What it keeps of ZeroGPU: `spaces.config.Config.zero_gpu` is true; a function decorated with `spaces.GPU(duration=...)`
runs, at each call, in a new process forked from the caller's, as ZeroGPU's workers are; its arguments cross into
that process pickled, and what it returns or yields crosses back pickled, one item at a time, so nothing else it
does there (a model moved, a cache filled) is seen by the caller; an exception raised there is raised in the
caller; a call that outlives its `duration` is killed and fails. What it leaves out: the GPU itself (the call's
process has the machine's devices, here the CPU) and ZeroGPU's queue of calls from many Spaces.

`CALLS` counts the calls made from this process (tests check that work went through GPU calls).
"""

from __future__ import annotations

import functools
import inspect
import os
import pickle
import signal
import time
from multiprocessing.connection import Connection

CALLS = {"n": 0}


class config:  # noqa: N801 - the real package's spelling: spaces.config.Config.zero_gpu
    class Config:
        zero_gpu = True


class GPUCallError(RuntimeError):
    """The call's process failed, or outlived its duration (ZeroGPU aborts such a call)."""


def _child(fn, payload: bytes, conn: Connection) -> None:
    """In the forked process: run the call, send back each item, then how it ended; never return to the caller's code."""
    try:
        args, kwargs = pickle.loads(payload)
        result = fn(*args, **kwargs)
        if inspect.isgenerator(result):
            for item in result:
                conn.send_bytes(pickle.dumps(("item", item)))
            conn.send_bytes(pickle.dumps(("end", None)))
        else:
            conn.send_bytes(pickle.dumps(("return", result)))
    except BaseException as err:  # noqa: BLE001 - every failure crosses back to the caller
        try:
            message = pickle.dumps(("error", err))
        except Exception:  # noqa: BLE001 - an exception that does not pickle crosses as its text
            message = pickle.dumps(("error", GPUCallError(f"{type(err).__name__}: {err}")))
        conn.send_bytes(message)
    finally:
        conn.close()
        os._exit(0)


def _call(fn, duration: float, args, kwargs):
    """Run fn in a forked process; yield ("item" | "return", value) messages as they come."""
    payload = pickle.dumps((args, kwargs))  # the arguments cross pickled: an unpicklable one fails here, as on ZeroGPU
    read, write = os.pipe()
    CALLS["n"] += 1
    pid = os.fork()
    if pid == 0:
        os.close(read)
        _child(fn, payload, Connection(write, readable=False))
    os.close(write)
    conn, deadline, ended = Connection(read, writable=False), time.monotonic() + duration, False
    try:
        while True:
            if not conn.poll(max(0.0, deadline - time.monotonic())):
                raise GPUCallError(f"GPU task aborted: the call ran over its {duration} s")
            try:
                kind, value = pickle.loads(conn.recv_bytes())
            except EOFError:
                raise GPUCallError("the GPU call's process ended without an answer") from None
            if kind == "error":
                raise value
            if kind == "end":
                ended = True
                return
            ended = kind == "return"
            yield kind, value
            if ended:
                return
    finally:
        conn.close()
        if not ended:
            os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


def gradio_auto_wrap(fn):
    """Gradio wraps every event function with this on a Space (gradio.block_function): the real one ties each GPU call
    to the visitor's quota; here nothing changes."""
    return fn


def GPU(fn=None, *, duration: float = 60):  # noqa: N802 - the real package's name
    """spaces.GPU: `@GPU` or `@GPU(duration=120)`."""
    def decorate(f):
        if inspect.isgeneratorfunction(f):
            @functools.wraps(f)
            def generator(*args, **kwargs):
                for _, item in _call(f, duration, args, kwargs):
                    yield item
            return generator

        @functools.wraps(f)
        def function(*args, **kwargs):
            for _, value in _call(f, duration, args, kwargs):
                return value
        return function
    return decorate(fn) if fn is not None else decorate
