"""A model of `make tune`'s fixed-count references that shares nothing with the run but the load: jobs every 1 to
3 s and 2 to 10 s of work each (both uniform, the loops' defaults), served first come, first served by a fixed
number of consumers that are always there. No database, no processes, no clock: each job's claim follows from
the ones before it. bench/tune.py prints its rows beside the measured ones, as a check on the measurement.

tests/test_tune.py holds the same recursion to the one queue the textbook solves exactly, M/M/c (Erlang's C
formula, below), and to the utilization the load implies.
"""

import heapq
import math
import random

PUSH_INTERVAL = (1.0, 3.0)  # seconds between two jobs, uniform (pusher/pusher.py's defaults)
PROCESS_TIME = (2.0, 10.0)  # seconds of work per job, uniform (consumer/consumer.py's defaults)


def fifo(consumers, created, work):
    """(claimed, completed) of each job, in the order they were created: each goes, once created, to the
    consumer that is free first (the recursion of Kiefer and Wolfowitz for c servers)."""
    free = [0.0] * consumers  # when each consumer is next free; a heap
    times = []
    for arrival, seconds in zip(created, work, strict=True):
        claimed = max(arrival, heapq.heappop(free))
        heapq.heappush(free, claimed + seconds)
        times.append((claimed, claimed + seconds))
    return times


def article_load(rng, until, burst_at=None, burst_jobs=0):
    """When each job is created, in order: the pusher's until `until` (its first one at once, as the pusher
    pushes before it first waits), and `burst_jobs` more all at `burst_at`."""
    created, t = [], 0.0
    while t < until:
        created.append(t)
        t += rng.uniform(*PUSH_INTERVAL)
    if burst_jobs:
        created += [burst_at] * burst_jobs
        created.sort()
    return created


def simulate(consumers, end, seed, burst_at=None, burst_jobs=0):
    """The jobs of one run that stops at `end`, as tune_metrics takes them: (created, claimed, completed),
    with None for what had not happened by then. The same seed gives the same run."""
    rng = random.Random(seed)
    created = article_load(rng, end, burst_at, burst_jobs)
    work = [rng.uniform(*PROCESS_TIME) for _ in created]
    jobs = []
    for arrival, (claimed, completed) in zip(created, fifo(consumers, created, work), strict=True):
        jobs.append((arrival, claimed if claimed <= end else None, completed if completed <= end else None))
    return jobs


def erlang_c(consumers, offered):
    """The probability that a job must wait, for `offered` erlangs on `consumers` servers, with exponential
    intervals and work (M/M/c); the mean wait is then that times the mean work / (consumers - offered)."""
    if offered >= consumers:
        return 1.0
    below = sum(offered**k / math.factorial(k) for k in range(consumers))
    top = offered**consumers / math.factorial(consumers) * consumers / (consumers - offered)
    return top / (below + top)
