"""One error hierarchy. The CLI turns any of these into one line on stderr and exit 2."""


class KbrulesError(Exception):
    """Something kbrules cannot work with; str() is the whole message, one line."""


class InputError(KbrulesError):
    """The input (JSON or image) is missing, unreadable or of the wrong shape."""


class ToolError(KbrulesError):
    """An external tool (qemu-img) failed or is missing."""


class RulesError(KbrulesError):
    """A rules file is broken."""


class UsageError(KbrulesError):
    """The command line asks for something that cannot be done."""


class OutputError(KbrulesError):
    """Standard output cannot take the report: closed, full, or a write error."""


class ReaderGone(Exception):
    """The reader of standard output went away (| head): stop quietly, as Unix tools do."""


class Interrupted(BaseException):
    """A signal (SIGINT, SIGTERM) asks kbrules to stop: the exit status is 128 + its
    number. A BaseException, as KeyboardInterrupt is: no `except Exception` swallows it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum
