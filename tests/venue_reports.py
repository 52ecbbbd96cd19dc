"""Venue events as a venue would report them in FIX (codes as on the wire), for tests that feed
the order store directly: the same translation the execution gateway applies."""

from __future__ import annotations

from typing import Any

from domain.execution import VenueEvent
from fix.messages import ExecReport, venue_event


def fix_report(*args: Any, **kwargs: Any) -> VenueEvent:
    """``fix_report(venue, exec_id, msg_type, cl_ord_id, order_id, exec_type, ord_status, ...)``:
    the :class:`VenueEvent` of that FIX report (fields of :class:`fix.messages.ExecReport`)."""
    return venue_event(ExecReport(*args, **kwargs))
