"""Cooperative stop shared by the long-running generators (training, conventional stacks)."""

from __future__ import annotations


def should_stop(stop) -> bool:
    """``stop`` is None, a ``threading.Event``-like object (``is_set``) or a callable returning True."""
    if stop is None:
        return False
    is_set = getattr(stop, "is_set", None)
    return bool(is_set() if is_set is not None else stop())
