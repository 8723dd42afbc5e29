# Sphinx configuration. Sources live in docs/; build with:
#   python -m sphinx -W --keep-going -b html . _build/html
project = "kbrules"
author = "the kbrules developers"
root_doc = "docs/index"
exclude_patterns = ["_build", "README.md", ".ci", "tests", "engine", "rules", "**/.pytest_cache"]
extensions: list[str] = []
html_theme = "alabaster"
