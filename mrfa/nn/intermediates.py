"""Capturing intermediate tensors without threading a ``trace`` argument through the production forward.

In the spirit of timm's ``forward_intermediates``, but for one call tree: inside ``with capture() as found:`` every
module that records an intermediate (``record`` / ``current``) writes it into ``found``; outside such a block
recording is a no-op and costs one context-variable read. Nested parts write into sub-dicts (``scope``); a caller
hides a sub-call's records with ``paused`` (e.g. the detectors inside the full model). The parity tests use this to
compare every intermediate with the official fixtures.

The active dict lives in a :class:`contextvars.ContextVar`, so captures in different threads or async tasks do not
mix.
"""
from __future__ import annotations

import contextlib
from contextvars import ContextVar
from typing import Any, Iterator, Optional

_ACTIVE: ContextVar[Optional[dict]] = ContextVar("mrfa_intermediates", default=None)


@contextlib.contextmanager
def capture(into: Optional[dict] = None) -> Iterator[dict]:
    """Record the intermediates of everything run inside the block into a dict (``into`` or a new one)."""
    found = {} if into is None else into
    token = _ACTIVE.set(found)
    try:
        yield found
    finally:
        _ACTIVE.reset(token)


def current() -> Optional[dict]:
    """The dict being recorded into, or None when no capture is active (the production case)."""
    return _ACTIVE.get()


def record(**tensors: Any) -> None:
    """Store ``name=tensor`` pairs in the active capture (no-op without one)."""
    found = _ACTIVE.get()
    if found is not None:
        found.update(tensors)


@contextlib.contextmanager
def scope(key: str) -> Iterator[Optional[dict]]:
    """Record the block's intermediates into ``current()[key]`` (a dict, created on first use)."""
    parent = _ACTIVE.get()
    if parent is None:
        yield None
        return
    child = parent.setdefault(key, {})
    token = _ACTIVE.set(child)
    try:
        yield child
    finally:
        _ACTIVE.reset(token)


@contextlib.contextmanager
def paused() -> Iterator[None]:
    """Record nothing inside the block (sub-modules whose intermediates belong to another test)."""
    token = _ACTIVE.set(None)
    try:
        yield
    finally:
        _ACTIVE.reset(token)
