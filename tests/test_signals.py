"""The stop request that a loop's signal handler sets: setting it from a handler never blocks the loop.

A signal handler runs in the main thread, between two bytecodes, wherever that thread happens to be. With
threading.Event as the stop request (before commit fe6f369), a signal arriving while the main thread was inside
Event.wait(), holding the Event's internal lock, made the handler's Event.set() wait for that same lock for ever:
the loop then ignored every later SIGTERM until Kubernetes sent SIGKILL.

And a signal that lands just as a wait begins must end that wait: the handler itself runs only after the wait's
select() returns, so the interpreter's wakeup fd, written the instant the signal arrives, must be the pipe that
select() watches.
"""

import random
import select
import signal
import subprocess
import sys
import time

import pytest
from support import ROOT

# The loop's own stop_on_signals(), then a tight loop of wait() calls, so that most signals land inside wait().
# One round per line on stdin: a fresh stop request, a line out, wait() until a signal sets it.
ROUNDS = 300
CHILD = r"""
import importlib.util, sys
spec = importlib.util.spec_from_file_location("loop", sys.argv[1])
loop = importlib.util.module_from_spec(spec)
spec.loader.exec_module(loop)
for n in range(int(sys.argv[2])):
    stop = loop.stop_on_signals()
    print(n, flush=True)
    while not stop.is_set():
        stop.wait(0)
print("done", flush=True)
"""
HANG = 5.0  # seconds without the next line: the round's signal handler is stuck


@pytest.mark.parametrize("loop", ["pusher", "consumer"])
def test_a_signal_handler_setting_the_stop_request_never_hangs_the_loop(loop):
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(ROOT / loop / f"{loop}.py"), str(ROUNDS)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
    )
    try:
        for n in range(ROUNDS + 1):
            ready, _, _ = select.select([child.stdout], [], [], HANG if n else 30)  # the first: a slow start
            assert ready, f"the handler of signal #{n} never returned: the loop is deadlocked"
            line = child.stdout.readline()
            if line == "done\n":
                break
            if line != f"{n}\n":
                child.kill()
                pytest.fail(f"the child stopped: {line}{child.stdout.read()}")
            time.sleep(random.uniform(0.0005, 0.002))  # into the loop of wait() calls, at a random point
            child.send_signal(signal.SIGTERM)  # one signal per round: the first, which sets the request
        assert n == ROUNDS
        assert child.wait(HANG) == 0
    finally:
        child.kill()
        child.wait()


# The loop's own stop_on_signals() and wait(), with the loop's select() made slow to begin: one more file
# descriptor in its list, whose fileno() takes a few hundred milliseconds of C code, where the interpreter
# runs no signal handler. A signal that lands then is handled only after the select() it was about to end.
LATE_CHILD = r"""
import functools, importlib.util, itertools, os, sys, types
spec = importlib.util.spec_from_file_location("loop", sys.argv[1])
loop = importlib.util.module_from_spec(spec)
spec.loader.exec_module(loop)
never, _ = os.pipe()
select = loop.select.select
slow = lambda: types.SimpleNamespace(fileno=functools.partial(max, itertools.repeat(never, 20_000_000)))
loop.select = types.SimpleNamespace(select=lambda r, w, x, timeout: select([*r, slow()], w, x, timeout))
stop = loop.stop_on_signals()
print("waiting", flush=True)
print("woken", stop.wait(60), flush=True)
"""


@pytest.mark.parametrize("loop", ["pusher", "consumer"])
def test_a_signal_that_lands_as_a_wait_begins_ends_that_wait_at_once(loop):
    # As the consumer goes idle or the pusher pauses: missed, the stop would wait out POLL_INTERVAL (30 s, the
    # consumer's whole grace period), PUSH_INTERVAL_MAX or RETRY_WAIT.
    for _ in range(3):
        child = subprocess.Popen(
            [sys.executable, "-c", LATE_CHILD, str(ROOT / loop / f"{loop}.py")],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            assert child.stdout.readline() == "waiting\n"
            time.sleep(0.05)  # inside the slow start of the select
            child.send_signal(signal.SIGTERM)
            ready, _, _ = select.select([child.stdout], [], [], HANG)
            assert ready, "the wait went on after the signal"
            assert child.stdout.readline() == "woken True\n"
            assert child.wait(HANG) == 0
        finally:
            child.kill()
            child.wait()
