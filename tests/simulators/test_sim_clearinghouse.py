"""The simulated clearinghouse builds its report from street fills and applies injected breaks;
the simulated ACH bank decides by instruction or amount pattern."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from domain.settlement import StreetFill, compare
from simulators.bank import AchBank
from simulators.clearinghouse import Clearinghouse, InjectedBreak

FILLS = [StreetFill("MM1", "e1", Decimal(10), Decimal("100")),
         StreetFill("MM1", "e2", Decimal(5), Decimal("50")),
         StreetFill("MM2", "e3", Decimal(1), Decimal("7"))]


async def _source(_: date) -> list[StreetFill]:
    return list(FILLS)


async def test_report_without_breaks_matches() -> None:
    ch = Clearinghouse(_source)
    report = await ch.report(date(2026, 11, 27))
    assert report is not None and compare(FILLS, report).breaks == []


async def test_injected_breaks_are_found() -> None:
    ch = Clearinghouse(_source)
    ch.inject(InjectedBreak("MM1", "e1", "drop"))
    ch.inject(InjectedBreak("MM1", "e2", "qty", qty=Decimal(4)))
    ch.inject(InjectedBreak("MM2", "e3", "price", price=Decimal("7.01")))
    ch.inject(InjectedBreak("MM2", "zz", "add"))
    report = await ch.report(date(2026, 11, 27))
    assert report is not None
    kinds = sorted(b.kind for b in compare(FILLS, report).breaks)
    assert kinds == ["missing_at_sherwood", "missing_at_street", "price_mismatch", "qty_mismatch"]
    ch.clear_breaks()
    report = await ch.report(date(2026, 11, 27))
    assert report is not None and compare(FILLS, report).breaks == []


async def test_bank_decisions() -> None:
    bank = AchBank()
    assert await bank.outcome("t1", "a1", "100.00") == "settle"
    assert await bank.outcome("t2", "a1", "100.13") == "return"
    await bank.instruct("a1", "hold")
    assert await bank.outcome("t1", "a1", "100.00") == "hold"
    await bank.instruct("t1", "return")
    assert await bank.outcome("t1", "a1", "100.00") == "return"
