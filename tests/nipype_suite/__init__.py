"""Nipype's own workflow-running tests, run from the installed package with a forced plugin."""
