"""Property test: random sequences of ledger operations across several accounts, fractional
share quantities and the firm's fills (``house_fill``) included, keep every invariant after every
step (sum zero per currency, cached == recomputed, no negative customer
balance, and balances equal a model that applies exactly the posted transactions)."""

from __future__ import annotations

import uuid
from collections import defaultdict
from decimal import Decimal

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from db.accounts import open_account
from db.errors import InsufficientFunds
from db.router import ShardRouter
from domain import ledger as rules
from domain.fractional import fraction_value

SYMBOLS = ["AAPL", "F", "SIRI"]
money = st.decimals(min_value=Decimal("0.01"), max_value=Decimal("500"), places=2)
price = st.decimals(min_value=Decimal("0.5"), max_value=Decimal("200"), places=4)
qty = st.integers(min_value=1, max_value=20)
# fractional shares: 1e-9 share to 20 shares at 9 decimals (domain.fractional)
frac_qty = st.decimals(min_value=Decimal("0.000000001"), max_value=Decimal("20"), places=9)
any_qty = st.one_of(qty, frac_qty)
who = st.integers(min_value=0, max_value=2)
sym = st.sampled_from(SYMBOLS)

op = st.one_of(
    st.tuples(st.just("deposit"), who, money),
    st.tuples(st.just("hold_cash"), who, money),
    st.tuples(st.just("release_cash"), who, money),
    st.tuples(st.just("buy_fill"), who, sym, qty, price),
    st.tuples(st.just("settle_shares"), who, sym, any_qty),
    st.tuples(st.just("hold_shares"), who, sym, any_qty),
    st.tuples(st.just("release_shares"), who, sym, any_qty),
    st.tuples(st.just("house_fill"), who, sym, st.sampled_from(["buy", "sell"]), frac_qty, price),
    st.tuples(st.just("sell_fill"), who, sym, qty, price),
    st.tuples(st.just("settle_cash"), who, money),
    st.tuples(st.just("reverse"), st.integers(min_value=0, max_value=50)),
    st.tuples(st.just("replay"), st.integers(min_value=0, max_value=50)),
)


def build(step: tuple, accounts: list[uuid.UUID], txn_id: str) -> rules.LedgerTxn:
    kind, *args = step
    a = accounts[args[0]]
    match kind:
        case "deposit":
            return rules.deposit_provisional(txn_id, a, args[1])
        case "hold_cash":
            return rules.hold_cash(txn_id, a, args[1])
        case "release_cash":
            return rules.release_cash(txn_id, a, args[1])
        case "buy_fill":
            return rules.buy_fill(txn_id, a, args[1], args[2], args[3])
        case "sell_fill":
            return rules.sell_fill(txn_id, a, args[1], args[2], args[3])
        case "settle_shares":
            return rules.settle_customer(txn_id, a, shares={args[1]: args[2]})
        case "settle_cash":
            return rules.settle_customer(txn_id, a, cash=args[1])
        case "hold_shares":
            return rules.hold_shares(txn_id, a, args[1], args[2])
        case "release_shares":
            return rules.release_shares(txn_id, a, args[1], args[2])
        case "house_fill":
            value = max(fraction_value(args[3], args[4]), Decimal("0.01"))
            return rules.house_fill(txn_id, a, args[1], args[2], args[3], value, args[4])
    raise AssertionError(kind)


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(steps=st.lists(op, min_size=1, max_size=25))
async def test_random_operations_keep_every_invariant(router: ShardRouter, steps: list) -> None:
    # all accounts of one example on one shard, so one ledger sees the whole story
    opened = [await open_account(router) for _ in range(3 * router.shard_count)]
    shard = opened[0].shard
    accounts = [o.account_id for o in opened if o.shard == shard][:3]
    while len(accounts) < 3:
        extra = await open_account(router)
        if extra.shard == shard:
            accounts.append(extra.account_id)
    ledger = router.ledger(shard)
    model: dict[tuple[uuid.UUID, str], Decimal] = defaultdict(Decimal)
    posted: list[rules.LedgerTxn] = []
    run = uuid.uuid4().hex[:8]

    for i, step in enumerate(steps):
        if step[0] in ("reverse", "replay"):
            if not posted:
                continue
            target = posted[step[1] % len(posted)]
            txn = target if step[0] == "replay" else target.reversed(f"{run}:{i}:rev")
        else:
            txn = build(step, accounts, f"{run}:{i}")
        try:
            result = await ledger.post(txn)
        except InsufficientFunds:
            continue
        if not result.replayed:
            posted.append(txn)
            for e in txn.entries:
                if e.account.owner is not None:
                    model[(e.account.owner, e.account.name)] += e.amount

        totals = await ledger.totals_by_currency()
        assert all(v == 0 for v in totals.values()), totals
        report = await ledger.reconcile()
        assert report.ok, report
        # only a correction posted with allow_negative may take a customer account below zero
        may_go_negative = {(e.account.owner, e.account.name)
                           for t in posted if t.allow_negative for e in t.entries}
        negatives = [(o, n) for o, n, _ in await ledger.negative_customer_balances()
                     if o in accounts]
        assert set(negatives) <= may_go_negative, negatives
        for a in accounts:
            actual = await ledger.balances(a)
            expected = {name: v for (owner, name), v in model.items() if owner == a and v != 0}
            assert {k: v for k, v in actual.items() if v != 0} == expected
