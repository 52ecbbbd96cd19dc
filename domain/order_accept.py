"""The first steps of a new order (``domain.order_machine``): created, then REJECTED by the
pre-trade checks, or VALIDATED and FUNDS_HELD with the hold to post (queued for the open outside
the session), or REJECTED for funds; and the REJECTED end of an order whose accept could not be
carried out. Pure.

Deliberately not here: the pre-trade rules themselves (``domain.risk.pre_trade``: this only turns
their outcome into the order's first steps) and anything after the hold.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from domain import ledger as templates
from domain.order_decision import Decision, Step
from domain.order_row import OrderRow
from domain.order_steps import ZERO, S, _finish
from domain.orders import OrderRequest
from domain.risk import PreTrade, Rejection, hold_refused


def accept(order: OrderRow, req: OrderRequest, pre: PreTrade, *,
           hold_refused_detail: str | None = None) -> Decision:
    """The first steps of a new order (``order`` is PENDING, not yet written): created, then
    REJECTED by the checks, or VALIDATED and FUNDS_HELD with the hold to post, or REJECTED for
    funds. ``hold_refused_detail``: the ledger refused the hold this function asked for (a
    concurrent change of the balance); decide again with it."""
    step = Step(order, order.created_at)
    step.event("created", actor=order.actor or "customer", reason="order received", to=S.PENDING,
               from_state="", data={"request": req.to_wire()})
    if not pre.validated:
        assert pre.rejection is not None
        return _reject(step, pre.rejection)
    # VALIDATED lasts only inside the accept: it is an audit event, the row is written once
    step.event("validated", actor="risk", reason="pre-trade checks passed", to=S.VALIDATED,
               data={"warnings": list(pre.warnings)} if pre.warnings else None)
    step.order = dataclasses.replace(step.order, state=S.VALIDATED)
    if pre.rejection is not None:
        return _reject(step, pre.rejection)
    if hold_refused_detail is not None:
        return _reject(step, hold_refused(req, pre), data={"detail": hold_refused_detail})
    txn_id = f"order:{order.id}:hold"
    sources = {k: v for k, v in pre.sources.items() if v} or {
        templates.SETTLED_CASH if req.side == "buy" else templates.SETTLED_SHARES: pre.amount}
    if req.side == "buy":
        step.postings.append(templates.hold_cash(txn_id, order.account_id, pre.amount, sources=sources))
    else:
        step.postings.append(templates.hold_shares(
            txn_id, order.account_id, req.symbol, pre.amount,
            from_unsettled=sources.get(templates.UNSETTLED_SHARES, ZERO)))
    step.set(state=S.FUNDS_HELD, hold_amount=pre.amount, hold_sources=sources)
    held = f"held {pre.amount} {'USD' if req.side == 'buy' else req.symbol}"
    if pre.route_at is not None:  # outside the session: it waits for the open (domain.hours)
        step.event("funds_held", actor="ledger", to=S.FUNDS_HELD, ledger_txn=txn_id,
                   reason=f"{held}; queued for the open at {pre.route_at.isoformat()}",
                   from_state=S.VALIDATED.value, data={"queued_until": pre.route_at.isoformat()})
    else:
        step.event("funds_held", actor="ledger", to=S.FUNDS_HELD, ledger_txn=txn_id, reason=held,
                   from_state=S.VALIDATED.value)
    step.update("accepted")
    return dataclasses.replace(step.decision(), insert=True)


def accept_failed(order: OrderRow, req: OrderRequest, why: Rejection) -> Decision:
    """A new order whose accept could not be carried out (an unexpected error of ours, or the
    shard out of reach past the retry maximum): written REJECTED with ``why``, nothing held, so
    that the customer sees an answer instead of an order that never ends."""
    step = Step(order, order.created_at)
    step.event("created", actor=order.actor or "customer", reason="order received", to=S.PENDING,
               from_state="", data={"request": req.to_wire()})
    _finish(step, S.REJECTED, actor="system", event="rejected", reason=why.reason, code=why.code)
    return dataclasses.replace(step.decision(), insert=True)


def _reject(step: Step, why: Rejection, data: Mapping[str, Any] | None = None) -> Decision:
    _finish(step, S.REJECTED, actor="risk", event="rejected", reason=why.reason, code=why.code,
            data=data)
    return dataclasses.replace(step.decision(), insert=True)
