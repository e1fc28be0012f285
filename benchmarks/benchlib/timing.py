"""The benchmarks' timing loop: :mod:`channelconv.apps.timing`.

One loop for the benchmarks and ``channelconv prune-demo``; it lives with
the applications so that the installed command can use it too.
"""

from channelconv.apps.timing import (
    SLOW_ROUNDS, interleaved, medians, paired, paired_ratio, seconds, summary, warm_up,
)

__all__ = [
    "SLOW_ROUNDS", "interleaved", "medians", "paired", "paired_ratio", "seconds",
    "summary", "warm_up",
]
