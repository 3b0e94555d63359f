"""Sphinx configuration for kjcore's documentation (built with warnings as errors in CI)."""
import os
import sys

sys.path.insert(0, os.path.abspath(".."))

project = "kjcore"
author = "the kjcore developers"
copyright = "2026, the kjcore developers"
extensions = ["sphinx.ext.autodoc", "numpydoc"]
numpydoc_show_class_members = False
numpydoc_validation_checks = set()
autodoc_member_order = "bysource"
exclude_patterns = ["_build"]
html_theme = "alabaster"
nitpicky = False
