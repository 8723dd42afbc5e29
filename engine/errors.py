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
