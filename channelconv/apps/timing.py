"""Interleaved timing of plain callables: the one timing loop of channelconv.

The benchmarks (``benchmarks/benchlib``) and ``channelconv prune-demo`` time
with it.

Callables in, per-callable lists of seconds out. :func:`interleaved` warms
each callable up, then times them in rounds: each round calls every
callable once (or ``calls`` times in a row), in a fixed or shuffled order,
so that drift of a shared machine hits all alike, with the garbage
collector off. :func:`medians` and :func:`summary` reduce the lists:
medians, and the median over rounds of each callable's time divided by a
baseline's time in the same round (a paired ratio).

It depends on the standard library only: nothing here knows about layers,
steps or Keras backends. A callable must return only once its result is
computed (``predict_on_batch``, and the benchmarks' steps, do on every
backend).

Example:

>>> import random
>>> times = interleaved({"a": lambda: None, "b": lambda: None}, 5, warmup=1,
...                     rng=random.Random(0))
>>> [len(t) for t in times.values()]
[5, 5]
>>> sorted(summary(times, "a")["a"])
['ms', 'ratio']
"""

import gc
import statistics
import time

#: With a time budget, rounds before ``min_rounds`` stop early once this
#: many are done and they took this many budgets: very slow callables.
SLOW_ROUNDS = 3


def seconds(fn):
    """Seconds of one call of ``fn()``."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def warm_up(fn, calls, slow=None):
    """Calls ``fn()`` ``calls`` times, or until a call takes more than ``slow`` seconds.

    Returns:
        The seconds of each call made.
    """
    made = []
    for _ in range(calls):
        made.append(seconds(fn))
        if slow is not None and made[-1] > slow:
            break
    return made


def interleaved(fns, rounds, *, warmup=0, slow=None, rng=None, calls=1,
                min_rounds=None, budget=None, keep=None):
    """Times the callables of ``fns`` in interleaved rounds.

    Args:
        fns: mapping of key to no-argument callable; its order is the
            order of a round unless ``rng`` shuffles it.
        rounds: the most rounds; exactly this many without ``budget``.
        warmup: calls of each callable before the rounds (one callable
            after the other), ended early by a call of more than ``slow``
            seconds (default: never).
        rng: ``None`` for the same order every round; else an object with
            a ``shuffle`` method (``random.Random(seed)``) that shuffles the
            order before every round.
        calls: calls of a callable in a row per round; its time for the
            round is their mean.
        min_rounds: rounds in which every callable is timed (default:
            ``rounds``). After them, only the keys ``keep(times)`` returns
            (default: all) go on being timed.
        budget: seconds the rounds after ``min_rounds`` may take: no round
            starts once they have taken more (default: no limit). The first
            ``min_rounds`` rounds end early, after :data:`SLOW_ROUNDS` of
            them, if they took more than :data:`SLOW_ROUNDS` budgets.
        keep: function of the times so far (as returned) returning the keys
            to time after ``min_rounds``.

    Returns:
        ``{key: [seconds of each round it was timed in]}``. Keys left out
        after ``min_rounds`` have shorter lists; round ``i`` of every key
        timed in it is item ``i`` of its list, so that pairing lists by
        position pairs times of the same round.
    """
    for fn in fns.values():
        warm_up(fn, warmup, slow)
    min_rounds = rounds if min_rounds is None else min(min_rounds, rounds)
    times = {key: [] for key in fns}
    order = list(fns)
    collecting = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        start = time.perf_counter()
        for done in range(1, rounds + 1):
            if rng is not None:
                rng.shuffle(order)
            for key in order:
                times[key].append(_mean_seconds(fns[key], calls))
            elapsed = time.perf_counter() - start
            if done < min_rounds:
                if (budget is not None and done >= SLOW_ROUNDS
                        and elapsed > SLOW_ROUNDS * budget):
                    break
            elif done == min_rounds:
                if keep is not None:
                    kept = set(keep(times))
                    order = [key for key in order if key in kept]
                start = time.perf_counter()
            elif budget is not None and elapsed > budget:
                break
    finally:
        if collecting:
            gc.enable()
    return times


def _mean_seconds(fn, calls):
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls


def medians(times, scale=1.0):
    """``{key: median of its seconds times scale}`` (``scale=1e3``: milliseconds)."""
    return {key: scale * statistics.median(t) for key, t in times.items()}


def paired(times, base):
    """``times`` and ``base`` cut to the rounds both were timed in."""
    n = min(len(times), len(base))
    return times[:n], base[:n]


def paired_ratio(times, base):
    """The median over the rounds both were timed in of ``times`` / ``base``."""
    return statistics.median(t / b for t, b in zip(*paired(times, base)))


def summary(times, baseline):
    """``{key: {"ms": median ms, "ratio": paired ratio to times[baseline]}}``."""
    base = times[baseline]
    return {key: {"ms": 1e3 * statistics.median(t), "ratio": paired_ratio(t, base)}
            for key, t in times.items()}
