"""Shim for tools that want a setup.py (Beam's ``--setup_file ./setup.py`` staging for Dataflow).

All metadata lives in setup.cfg.
"""

from setuptools import setup

setup()
