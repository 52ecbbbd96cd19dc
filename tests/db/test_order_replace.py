"""Cancel/replace in the order store: each step is one transaction over both orders, and the
account's holds add up to what the open orders hold, to the cent."""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest

from db import sql
from db.accounts import OpenedAccount
from db.engines import reading
from db.orders import OrderStore
from db.router import ShardRouter
from domain.errors import DomainError
from domain.orders import OrderSnapshot
from tests.db.test_orders import accept, funded
from tests.venue_reports import fix_report


async def state(store: OrderStore, acct: OpenedAccount) -> tuple[Decimal, Decimal, Decimal]:
    """(cash, cash_held, the holds of the account's orders)."""
    async with reading(store.engine) as conn:
        held = await sql.scalar(conn, "SELECT coalesce(sum(hold_amount), 0) FROM orders "
                                "WHERE account_id = :a", {"a": acct.account_id})
    return (await store_ledger(store, acct, "cash"), await store_ledger(store, acct, "cash_held"),
            Decimal(held))


async def store_ledger(store: OrderStore, acct: OpenedAccount, name: str) -> Decimal:
    async with reading(store.engine) as conn:
        v = await sql.scalar(conn, "SELECT coalesce(sum(b.balance), 0) FROM ledger_accounts la "
                             "JOIN balances b ON b.ledger_account_id = la.id "
                             "WHERE la.owner_id = :a AND la.name = :n",
                             {"a": acct.account_id, "n": name})
    return Decimal(v)


async def working(store: OrderStore, acct: OpenedAccount) -> OrderSnapshot:
    """A buy of 10 F @ 100 acknowledged by MM1 (1,000 held)."""
    snap = await accept(store, acct, symbol="F", side="buy", type="limit", time_in_force="gtc",
                        qty="10", limit_price="100")
    oid = snap.order_id
    return await store.apply_reports(oid, [fix_report("MM1", f"{oid}:A", "8", oid, oid, "0", "0",
                                                      venue_order_id="V1", leaves_qty="10")],
                                     routed_venue="MM1")


def replaced(old: str, new: str, cum: str) -> object:
    return fix_report("MM1", f"{new}:R", "8", new, old, "5", "0", orig_cl_ord_id=old,
                      venue_order_id="V1", cum_qty=cum)


async def test_replace_accepted_racing_a_fill_and_refused(router: ShardRouter) -> None:
    acct = await funded(router, "5000")
    store = OrderStore(router.engine(acct.shard))
    old = (await working(store, acct)).order_id
    assert await state(store, acct) == (4000, 1000, 1000)
    new = str(uuid.uuid4())
    rec = await store.request_replace(old, {"qty": "20", "limit_price": "101"}, new_id=new)
    rep = rec.replacement
    assert (rec.send.orig_order_id, rec.send.order.order_id, rec.send.order.qty,
            rec.send.order.limit_price, rec.send.venue) == (old, new, "20", "101", "MM1")
    assert (rep.order_id, rep.state, rep.hold_remaining) == (new, "ROUTED", "1020")
    assert (await store.snapshot(old)).state == "PENDING_REPLACE"
    assert await state(store, acct) == (2980, 2020, 2020)
    # a retry of the same request returns the same replacement, holds nothing more
    assert (await store.request_replace(old, {"qty": "20", "limit_price": "101"},
                                        new_id=new)).replacement.order_id == new
    assert await state(store, acct) == (2980, 2020, 2020)
    # a fill of the original races the replace: booked against it; then the venue replaces
    fill = fix_report("MM1", f"{old}:F", "8", old, old, "F", "1", last_qty="4", last_px="99.50",
                      cum_qty="4", leaves_qty="6", avg_px="99.50")
    snap = await store.apply_reports(old, [fill, replaced(old, new, "4")])  # type: ignore[list-item]
    assert (snap.state, snap.filled_qty, snap.hold_remaining) == ("REPLACED", "4", "0")
    rep = await store.snapshot(new)
    assert (rep.state, rep.qty, rep.hold_remaining) == ("ACKED", "16", "1616")
    assert await state(store, acct) == (2986, 1616, 1616)  # 5,000 - 398 - 1,616

    # a second replace, of the replacement, refused by the venue: nothing changes but the new
    # order, which ends REJECTED and gives its extra hold back
    third = str(uuid.uuid4())
    rec = await store.request_replace(new, {"qty": "30"}, new_id=third)
    assert rec.send.order.qty == "34"  # the venue counts the 4 the first order filled
    assert await state(store, acct) == (1572, 3030, 3030)  # 30 x 101 held
    refusal = fix_report("MM1", f"CXLREJ-{third}-{new}", "9", third, new, "", "0",
                         orig_cl_ord_id=new, cxl_rej_reason="2", cxl_rej_response_to="2",
                         text="no")
    snap = await store.apply_reports(new, [refusal])  # type: ignore[list-item]
    assert (snap.state, snap.hold_remaining) == ("ACKED", "1616")
    gone = await store.snapshot(third)
    assert (gone.state, gone.reject_code) == ("REJECTED", "replace_rejected")
    assert await state(store, acct) == (2986, 1616, 1616)


async def test_a_replace_the_account_cannot_pay_for_changes_nothing(router: ShardRouter) -> None:
    acct = await funded(router, "1500")
    store = OrderStore(router.engine(acct.shard))
    old = (await working(store, acct)).order_id
    with pytest.raises(DomainError) as exc:
        await store.request_replace(old, {"qty": "20"}, new_id=str(uuid.uuid4()))
    assert exc.value.code == "insufficient_buying_power"
    assert (await store.snapshot(old)).state == "ACKED"
    assert await state(store, acct) == (500, 1000, 1000)
    for body, code in (({"qty": "10"}, "nothing_to_replace"), ({"trail": "1"}, "replace_not_supported")):
        with pytest.raises(DomainError) as exc:
            await store.request_replace(old, body, new_id=str(uuid.uuid4()))
        assert exc.value.code == code


async def test_the_original_filling_first_ends_the_replacement(router: ShardRouter) -> None:
    acct = await funded(router, "5000")
    store = OrderStore(router.engine(acct.shard))
    old = (await working(store, acct)).order_id
    new = str(uuid.uuid4())
    await store.request_replace(old, {"qty": "20"}, new_id=new)
    fill = fix_report("MM1", f"{old}:F", "8", old, old, "F", "2", last_qty="10", last_px="100",
                      cum_qty="10", leaves_qty="0", avg_px="100")
    snap = await store.apply_reports(old, [fill])
    assert snap.state == "FILLED"
    rep = await store.snapshot(new)
    assert (rep.state, rep.reject_code, rep.hold_remaining) == ("REJECTED", "replace_rejected", "0")
    assert await state(store, acct) == (4000, 0, 0)


async def test_resolving_a_stuck_original_ends_its_pending_replacement(router: ShardRouter) -> None:
    """The venue replaced with a CumQty we never booked: the original goes STUCK (both holds
    stay). The operator resolves the original with what the venue says happened; the
    replacement, which no venue will work under our books, ends REJECTED and gives its extra
    hold back: nothing stays held for an order that is not working."""
    from domain.orders import ResolveInput

    acct = await funded(router, "5000")
    store = OrderStore(router.engine(acct.shard))
    old = (await working(store, acct)).order_id
    new = str(uuid.uuid4())
    await store.request_replace(old, {"qty": "20"}, new_id=new)
    snap = await store.apply_reports(old, [replaced(old, new, "3")])  # type: ignore[list-item]
    assert snap.state == "STUCK"
    assert (await store.snapshot(new)).state == "ROUTED"
    assert await state(store, acct) == (3000, 2000, 2000)
    done = await store.resolve(ResolveInput(order_id=old, outcome="canceled", filled_qty="3",
                                            avg_price="99"))
    assert (done.state, done.filled_qty) == ("CANCELED", "3")
    rep = await store.snapshot(new)
    assert (rep.state, rep.reject_code, rep.hold_remaining) == ("REJECTED", "replace_rejected", "0")
    assert await state(store, acct) == (4703, 0, 0)  # 5,000 - 3 x 99


async def test_an_unanswered_replace_then_late_answers_book_exactly(router: ShardRouter) -> None:
    """The venue answered neither the replace nor the status request: the original STUCK with
    its 1,000, the replacement REJECTED with its extra 1,000 back. Then the venue's late
    answers: a fill of the original books against it; a Replaced is audited, nothing guessed;
    the operator resolves with what the venue says."""
    from domain.orders import ResolveInput

    acct = await funded(router, "5000")
    store = OrderStore(router.engine(acct.shard))
    old = (await working(store, acct)).order_id
    new = str(uuid.uuid4())
    await store.request_replace(old, {"qty": "20"}, new_id=new)
    assert await state(store, acct) == (3000, 2000, 2000)
    snap = await store.give_up_replace(old, "no answer")
    assert (snap.state, snap.hold_remaining) == ("STUCK", "1000")
    rep = await store.snapshot(new)
    assert (rep.state, rep.reject_code, rep.hold_remaining) == ("REJECTED", "replace_unanswered", "0")
    assert await state(store, acct) == (4000, 1000, 1000)
    assert (await store.give_up_replace(old, "again")).state == "STUCK"  # a retry: nothing more
    fill = fix_report("MM1", f"{old}:F", "8", old, old, "F", "1", last_qty="4", last_px="99.50",
                      cum_qty="4", leaves_qty="6", avg_px="99.50")
    snap = await store.apply_reports(old, [fill, replaced(old, new, "4")])  # type: ignore[list-item]
    assert (snap.state, snap.filled_qty, snap.hold_remaining) == ("STUCK", "4", "602")
    assert (await store.snapshot(new)).state == "REJECTED"
    async with reading(store.engine) as conn:
        late = await sql.scalar(conn, "SELECT reason FROM order_events WHERE order_id = :o AND "
                                "event = 'replaced_late'", {"o": uuid.UUID(old)})
    assert "after the replace was given up" in late
    assert await state(store, acct) == (4000, 602, 602)
    done = await store.resolve(ResolveInput(order_id=old, outcome="canceled", filled_qty="4"))
    assert (done.state, done.hold_remaining) == ("CANCELED", "0")
    assert await state(store, acct) == (4602, 0, 0)  # 5,000 - 4 x 99.50
