"""The Ray and Ray Data settings of one run, scoped to it.

A run (or a fine-tuning job) quiets Ray Data's progress bars and some of Ray's loggers,
and may cap the object store its dataset holds. None of it is set process-wide: the run
gets a copy of the caller's DataContext (Ray copies the current one into each dataset it
reads, so every dataset the run builds carries the run's settings), the loggers' levels
and Ray's console printer are put back as they were, so a second run in the same process
(`diagnose`, a notebook) starts from the caller's settings, not the first run's.
"""
from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping

QUIET: dict[str, int] = {
    # ray.init(logging_level=WARNING) sets this one; the run puts it back afterwards.
    "ray": logging.WARNING,
    # Our own progress bar and summary replace Ray Data's per-operator logs.
    "ray.data": logging.WARNING,
    # Ray Data says "Progress bars disabled ..." once per run at WARNING: that is our choice, not news.
    "ray.data._internal.progress": logging.ERROR,
    # Ray Data logs a failed run's whole stack before raising it; the run reports it once
    # (pipeline.actor_failure: one line, the stack in a log file).
    "ray.data.exceptions": logging.CRITICAL,
    "ray.data._internal.execution.operators.actor_pool_map_operator": logging.CRITICAL,
}


@contextlib.contextmanager
def log_levels(levels: Mapping[str, int]) -> Iterator[None]:
    """These loggers at these levels inside the block, at their own levels after it."""
    before = {name: logging.getLogger(name).level for name in levels}
    try:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
        yield
    finally:
        for name, level in before.items():
            logging.getLogger(name).setLevel(level)


# Raylet messages that are about Ray's own bookkeeping, not the run: the raylet writes each
# to its own log (raylet.out), and the driver would print it again on the console.
# "N PYTHON worker processes have been started ... the maximum expected startup
# concurrency": a loaded node starting a run's or a fine-tuning job's actors.
RAYLET_LOG_ONLY = ("worker processes have been started on node",)


@contextlib.contextmanager
def raylet_messages_in_one_line() -> Iterator[None]:
    """Ray prints the messages its raylet publishes (a task retried on an actor that died
    in its constructor: its whole stack, ~100 lines) whatever log_to_driver says; inside
    the block only each one's first line is printed, without the stack (the run's own
    line names the log file that has it), and the ones in RAYLET_LOG_ONLY are left to the
    raylet's log. Ray keeps no setting for this: its printer is wrapped for the block and
    put back after it."""
    import ray._private.worker as worker

    printer = getattr(worker, "print_to_stdstream", None)
    if printer is None:
        yield
        return

    def first_lines(data, ignore_prefix: bool):
        if data.get("pid") == "raylet":
            lines = [str(line).split(" Error: Traceback", 1)[0].split("\n", 1)[0] for line in data.get("lines", [])]
            lines = [line for line in lines if not any(s in line for s in RAYLET_LOG_ONLY)]
            if not lines:
                return None
            data = {**data, "lines": lines}
        return printer(data, ignore_prefix)

    worker.print_to_stdstream = first_lines
    try:
        yield
    finally:
        if worker.print_to_stdstream is first_lines:  # not if something else replaced it meanwhile
            worker.print_to_stdstream = printer


@contextlib.contextmanager
def scoped() -> Iterator:
    """The run's own DataContext (a copy of the caller's, Ray Data's progress bars off) as
    the current one, and Ray's loggers quiet, for the block; yields the context, where
    the run sets what it decides later (pipeline.run: the object-store cap once the
    cluster is known). After the block the caller's context, levels and printer are back."""
    from ray.data import DataContext

    ctx = DataContext.get_current().copy()
    ctx.enable_progress_bars = False
    with DataContext.current(ctx), log_levels(QUIET), raylet_messages_in_one_line():
        yield ctx
