# Sphinx configuration. Sources live in docs/; build with (warnings are errors):
#   python3 -m sphinx -W --keep-going -b html . _build/html
# and open _build/html/index.html.
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # engine/, even when not installed

project = "kbrules"
author = "the kbrules developers"
# The footer: project, years, licence (pyproject.toml's). Sphinx prints
# "© Copyright <copyright>", so this is the text after it.
copyright = "2026, the kbrules developers; MIT licence"
root_doc = "docs/index"
include_patterns = ["docs/**"]
exclude_patterns = ["_build", "**/.pytest_cache", "docs/examples", "docs/_templates"]
extensions: list[str] = ["engine.sphinxext"]

# Furo: maintained (several releases a year), and built for pages like these, which
# are mostly prose around long shell sessions and tables. Its text column is wide
# enough for an 80-column terminal session in a code block without scrolling (a test
# holds every code line to the width measured in a browser: tests/test_site.py), its
# sidebars fold away on narrow screens, and it has a dark mode. alabaster (the default)
# fixed the text column at 940 px and clipped the sessions; sphinx-rtd-theme is
# narrower still; pydata-sphinx-theme is made for API sites with a top navigation bar.
html_theme = "furo"
html_title = "kbrules"
html_theme_options = {
    "source_repository": "",  # no public repository to link to (yet)
    "navigation_with_keys": True,
}
html_copy_source = False  # the .rst sources are in the repository; no _sources/ copies
html_show_sourcelink = False
templates_path = ["docs/_templates"]
# _build/html/index.html: the front page, one level up from docs/index.html.
html_additional_pages = {"index": "root-index.html"}
# Commands in the text must stay as typed: no "--" turned into a dash, no curly quotes.
smartquotes = False
