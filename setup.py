"""A shim for tools that still call setup.py: s2f's metadata is in pyproject.toml."""

from setuptools import setup

setup()
