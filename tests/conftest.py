"""Test settings shared by every test module.

Hypothesis profiles (pick one with ``--hypothesis-profile NAME``):
- ``default``: 100 examples per property test, exploring anew each run;
- ``ci``: the same count, derandomized (CI=true selects it), so that a submission's
  verdict does not depend on the draw;
- ``quick``: 10 examples, for the quick loop of README;
- ``thorough``: 1000 examples, before a release or after touching normalization.
"""

import os

from hypothesis import settings

settings.register_profile("default", max_examples=100)
settings.register_profile("ci", max_examples=100, derandomize=True, print_blob=True)
settings.register_profile("quick", max_examples=10)
settings.register_profile("thorough", max_examples=1000)
settings.load_profile("ci" if os.environ.get("CI") else "default")


def pytest_sessionfinish() -> None:
    """Stop the libvirt daemons this run started (tests/libvirtd.py), if any."""
    import libvirtd

    libvirtd.DAEMONS.stop()
