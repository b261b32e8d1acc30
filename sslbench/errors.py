"""User-facing errors.

Anything a user can cause (a bad flag, a missing dataset, a foreign database) raises a subclass of
:class:`SSLBenchError` whose message is one line naming the problem and the fix. The CLI prints it
and exits with code 1, without a traceback. Every other exception is a bug and keeps its traceback.
"""


class SSLBenchError(Exception):
    """An expected failure, reported to the user as one line."""


class ConfigError(SSLBenchError):
    """An invalid or inconsistent configuration value."""


class DataError(SSLBenchError):
    """A dataset that is missing, incomplete or unreadable."""


class StoreError(SSLBenchError):
    """A results store that cannot be reached, is foreign, or has another schema version."""


class UnknownRunError(StoreError):
    """A run id that the store does not hold."""


def one_line(err: BaseException) -> str:
    """The message of ``err`` as one line, also when a DataLoader worker re-raised it (torch
    then prefixes "Caught X in DataLoader worker process N" and the worker's whole traceback)."""
    text = str(err).strip()
    if "Original Traceback" in text:
        last = text.splitlines()[-1]
        text = last.split(": ", 1)[1] if ": " in last else last
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else type(err).__name__
