"""A minimal progress bar for long benchmark runs."""

import sys
import time


class Progress:
    """A minimal progress bar on ``stream``: done/total, elapsed, estimate left.

    Redraws in place on a terminal; writes one line per step otherwise.
    """

    def __init__(self, total, stream=sys.stderr, width=24):
        self.total, self.stream, self.width = total, stream, width
        self.done = 0
        self.start = time.perf_counter()
        self.tty = hasattr(stream, "isatty") and stream.isatty()

    def advance(self, label):
        self.done += 1
        elapsed = time.perf_counter() - self.start
        left = elapsed / self.done * (self.total - self.done)
        filled = round(self.width * self.done / self.total)
        bar = "#" * filled + "." * (self.width - filled)
        text = (f"[{bar}] {self.done}/{self.total} {_mmss(elapsed)} "
                f"(~{_mmss(left)} left) {label}")
        if self.tty:
            self.stream.write("\r" + text[:150].ljust(150))
            if self.done == self.total:
                self.stream.write("\n")
        else:
            self.stream.write(text + "\n")
        self.stream.flush()


def _mmss(seconds):
    return f"{int(seconds) // 60}:{int(seconds) % 60:02d}"
