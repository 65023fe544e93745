"""Policy formats: conftest-style modules and Gatekeeper ConstraintTemplate + Constraint pairs."""

from __future__ import annotations


class FormatError(ValueError):
    """A policy document is malformed; the message names the field."""
