"""Project exceptions and the exit codes they map to (documented in docs/safety.md)."""

EXIT_OK = 0
EXIT_FAILED = 1  # the job ran and failed (unexpected error, --strict prediction errors)
EXIT_USAGE = 2  # bad option, bad input data, missing files
EXIT_GATE = 3  # evaluate --fail-under / --fail-over: a metric is on the wrong side of its threshold
EXIT_INTERRUPTED = 130  # Ctrl-C (SIGINT): 128 + 2
EXIT_TERMINATED = 143  # SIGTERM (CI runners, `timeout`, `kill`): 128 + 15


class ImgclassError(Exception):
    """An error whose message is meant for the user: one line, names the file and what to do."""

    exit_code = EXIT_USAGE

    def __init__(self, message: str, exit_code: int | None = None):
        super().__init__(message)
        self.message = message
        if exit_code is not None:
            self.exit_code = exit_code


class JobFailed(ImgclassError):
    exit_code = EXIT_FAILED


class GateFailed(ImgclassError):
    exit_code = EXIT_GATE


def first_line(e) -> str:
    """The first line of an exception's message (library errors can span pages), or its type when it has none."""
    text = (str(e).strip().splitlines() or [""])[0]
    return text or (type(e).__name__ if isinstance(e, BaseException) else "")
