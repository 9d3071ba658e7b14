"""``python wsgi.py`` under tracemalloc, for ``bench/realtime.py --memory-trace``.

Tracing starts before anything is imported (before eventlet patches the standard library).
Each SIGUSR2 writes ``$MEMTRACE_OUT.<k>.snap`` (a tracemalloc snapshot) and
``$MEMTRACE_OUT.<k>.json`` (live objects by type, from the collector) and then
``$MEMTRACE_OUT.<k>.done``; the bench diffs two of them, taken at two client counts.
"""
from __future__ import annotations

import tracemalloc

# MEMTRACE_LATE=1: tracing starts at the first SIGUSR2 instead (a server that starts in
# seconds rather than minutes on a loaded machine); the second snapshot then holds what was
# allocated between the two, which is what the per-connection diff needs.
FRAMES = int(__import__("os").environ.get("MEMTRACE_FRAMES", "12"))
if not __import__("os").environ.get("MEMTRACE_LATE"):
    tracemalloc.start(FRAMES)

import gc  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import runpy  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
from collections import Counter  # noqa: E402
from pathlib import Path  # noqa: E402

OUT = os.environ["MEMTRACE_OUT"]
ROOT = Path(__file__).resolve().parent.parent
_count = [0]


def _dump(_signum, _frame) -> None:
    k = _count[0] = _count[0] + 1
    gc.collect()
    if not tracemalloc.is_tracing():
        tracemalloc.start(FRAMES)
    snap = tracemalloc.take_snapshot()
    snap.dump(f"{OUT}.{k}.snap")
    del snap  # its traces are tuples: not to be counted below
    types = Counter(type(o).__qualname__ for o in gc.get_objects())
    sizes: Counter = Counter()
    for o in gc.get_objects():
        sizes[type(o).__qualname__] += sys.getsizeof(o, 0)
    with open(f"{OUT}.{k}.json", "w") as f:
        json.dump({"counts": types, "sizes": sizes,
                   "traced": tracemalloc.get_traced_memory()[0]}, f)
    Path(f"{OUT}.{k}.done").touch()


signal.signal(signal.SIGUSR2, _dump)
sys.argv = [str(ROOT / "wsgi.py")]
runpy.run_path(str(ROOT / "wsgi.py"), run_name="__main__")
