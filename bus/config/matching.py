"""``match:`` of a service or operation: how much a lookup must say about its subject before
the upstream is asked, and how many MISMATCH answers a consumer may collect.

A CCCD's first six digits already carry the birth year, so a year-only birth date adds
nothing: ID + name alone would return the full record. ``birth_date: full_for_cccd`` (the
default) refuses a partial birth date for a 12-digit subject with ``400
BIRTH_DATE_INCOMPLETE`` before anything is sent; ``full`` refuses it for every subject;
``partial`` accepts ``YYYY`` and ``YYYY-MM`` (the upstream compares at the precision given).

``mismatches`` per ``window_s``: after that many MISMATCH answers to one consumer on one
service, its next calls there are refused with ``429 MISMATCH_LIMIT`` (``Retry-After``)
until the window ends — a birth date cannot be confirmed by guessing it (≤ 366 guesses).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["BirthDateRule", "MatchPolicy"]

BirthDateRule = Literal["full_for_cccd", "full", "partial"]


class MatchPolicy(BaseModel):
    """``services.<s>.match`` (the service's default) or ``…operations.<op>.match``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    birth_date: BirthDateRule = Field(
        "full_for_cccd",
        description="full_for_cccd: a 12-digit subject needs YYYY-MM-DD; full: every subject "
        "does; partial: YYYY and YYYY-MM are accepted",
    )
    mismatches: int = Field(
        5, ge=1, le=10_000, description="MISMATCH answers a consumer may get per window"
    )
    window_s: float = Field(
        3600.0, ge=1, le=7 * 86_400, description="the mismatch window (per gateway process)"
    )
