"""The error every preflight check raises."""

from __future__ import annotations

import logging

log = logging.getLogger("rls.preflight")


class PreflightError(ValueError):
    """A setting that cannot work; the message starts with ``<config key>=<value>:``."""
