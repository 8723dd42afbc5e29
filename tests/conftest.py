"""Test settings shared by every test module."""

import os

from hypothesis import settings

# In CI the property tests run a fixed sequence of examples, so a submission's verdict
# does not depend on the draw; on a developer's machine they explore anew each run.
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")
