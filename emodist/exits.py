"""Exit statuses of `emodist run` and `emodist finetune` and of their `ray job submit`
entrypoints (ray_jobs/relabel.py, ray_jobs/finetune.py), and which error means which:
written once, so the command line and the jobs cannot drift apart."""
from __future__ import annotations

EXIT_OK, EXIT_STOPPED, EXIT_NOT_STARTED, EXIT_ALL_FAILED = 0, 1, 2, 3


def exit_status(exc: BaseException) -> int | None:
    """EXIT_NOT_STARTED for an error that refused the job before anything ran (config,
    input, models, another run holding the output: ConfigError, SourceError), EXIT_STOPPED
    for one that stopped it midway (RunStopped: rerun to resume), None for any other error
    (a bug: the caller lets it raise, with its stack)."""
    from emodist.config import ConfigError
    from emodist.pipeline import RunStopped
    from emodist.storage import SourceError

    if isinstance(exc, ConfigError | SourceError):
        return EXIT_NOT_STARTED
    if isinstance(exc, RunStopped):
        return EXIT_STOPPED
    return None
