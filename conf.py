# Sphinx configuration. Sources live in docs/; build with (warnings are errors):
#   python3 -m sphinx -W --keep-going -b html . _build/html
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # engine/, even when not installed

project = "kbrules"
author = "the kbrules developers"
root_doc = "docs/index"
include_patterns = ["docs/**"]
exclude_patterns = ["_build", "**/.pytest_cache", "docs/examples"]
extensions: list[str] = ["engine.sphinxext"]
html_theme = "alabaster"
# Commands in the text must stay as typed: no "--" turned into a dash, no curly quotes.
smartquotes = False
