"""The demo's one error: what it refused, or what the factory did not do, in a sentence for the terminal."""

from __future__ import annotations


class DemoRefused(Exception):
    """The demo cannot do what was asked, or the factory did not do what it should (the message says
    which and why)."""
