"""Which orders count against their shard's admission limit (``api/admission.py``). Pure.

An order counts from its admission (before its workflow is started) while it is **in transit**:
accepted and on its way to a venue, not yet resting there or ended. That is the work that queues
in Temporal, the shard worker and the gateway when a shard is overloaded; an order resting at a
venue, held at the broker or waiting for the open costs nothing until something happens to it.

- :func:`keeps_slot`: the API's view, from the accept's answer: the order goes on to a venue now.
- :func:`leaves_transit`: the shard's view, from a committed transition: the order has stopped
  being in transit (it rests at a venue, is held, is stuck for an operator, or ended).

Deliberately not here: the limit itself (a setting), the counting (Redis, ``api/admission.py``)
and the shard's release of the slot (``workers/outbox.py``).
"""

from __future__ import annotations

from domain.order_state import OrderState

S = OrderState
# the states of an order on its way from the accept to a venue's first answer
IN_TRANSIT = frozenset({S.PENDING, S.VALIDATED, S.FUNDS_HELD, S.ROUTED})
# order types that wait at the broker after their accept instead of routing (workflows/order.py)
WAITS_AT_BROKER = frozenset({"trailing_stop"})


def keeps_slot(state: str, order_type: str, *, queued_until: str | None) -> bool:
    """Whether an order the accept answered with ``state`` goes on to a venue now, and so keeps
    its admission slot until the shard releases it (:func:`leaves_transit`). A refused or ended
    order, one queued for the open and one that waits for its trigger give theirs back at once.
    A group's parent routes like any order (its legs are HELD and never counted)."""
    return (OrderState(state) in IN_TRANSIT and not queued_until
            and order_type not in WAITS_AT_BROKER)


def leaves_transit(from_state: str | None, to_state: str | None) -> bool:
    """Whether a committed transition takes an order out of transit: its admission slot, if it
    holds one, is free again."""
    if not to_state or to_state == from_state:
        return False
    return OrderState(to_state) not in IN_TRANSIT
