"""One error hierarchy. The CLI turns any of these into one line on stderr and exit 2.

Each kind has a `reason`: one word from a small fixed set, which the Prometheus
format gives as the reason of an input that could not be checked (the message
itself, free text, stays on stderr)."""


class KbrulesError(Exception):
    """Something kbrules cannot work with; str() is the whole message, one line."""

    reason = "other"


class InputError(KbrulesError):
    """The input (JSON or image) is missing, unreadable or of the wrong shape."""

    reason = "input"


class ToolError(KbrulesError):
    """An external tool (qemu-img) failed or is missing."""

    reason = "tool"


class ToolTimeout(ToolError):
    """An external tool gave no answer in time (a hung NFS mount, a stuck libvirtd)."""

    reason = "timeout"


class RulesError(KbrulesError):
    """A rules file is broken."""

    reason = "rules"


class UsageError(KbrulesError):
    """The command line asks for something that cannot be done."""

    reason = "usage"


class OutputError(KbrulesError):
    """The report cannot be written: standard output closed, full or failing, or the
    file that --output names."""

    reason = "output"


class ReaderGone(Exception):
    """The reader of standard output went away (| head): stop quietly, as Unix tools do."""


class Interrupted(BaseException):
    """A signal (SIGINT, SIGTERM) asks kbrules to stop: the exit status is 128 + its
    number. A BaseException, as KeyboardInterrupt is: no `except Exception` swallows it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum
