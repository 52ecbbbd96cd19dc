"""Sherwood: entry points (CLI, settings, the local dev stack).

Business code lives in the top-level packages (``domain``, ``db``, ``workflows`` ...); this package
holds only what wires them together. Only entry points build :class:`sherwood.settings.Settings`.
"""
