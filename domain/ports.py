"""Ports: what Sherwood needs from the outside world, in the business's words (pure: no I/O).

Activities and workers depend on these :class:`typing.Protocol` classes only, never on an
implementation. The entry points in :mod:`sherwood` choose the implementation
(:func:`sherwood.wiring.outside_world`); today those are the simulators, which satisfy the ports
structurally (:class:`simulators.bank.AchBank` is a :class:`Bank`,
:class:`simulators.clearinghouse.Clearinghouse` a :class:`Clearinghouse`; mypy checks both in
their modules). A real bank or clearinghouse integration would implement the same methods with
the same meaning.

- :class:`Bank`: the ACH bank behind customer deposits and withdrawals, called by the funding
  activities (:mod:`activities.funding`) of the Deposit and Withdrawal workflows.
- :class:`Clearinghouse`: the street side of T+1 settlement, called by the settlement report
  activity (:mod:`activities.settlement`) to compare Sherwood's settled executions with it.
"""

from __future__ import annotations

from datetime import date
from typing import Protocol

from domain.settlement import StreetFill

# The answers of Bank.outcome.
SETTLE = "settle"  # the ACH entry settled: the money moved
RETURN = "return"  # the ACH entry came back (a deposit returned, e.g. R01; a withdrawal failed)
HOLD = "hold"  # no answer yet: the entry is still pending at the bank


class Bank(Protocol):
    """The ACH bank that moves money between a customer's external bank account and Sherwood.

    A transfer is identified by Sherwood's transfer id; ``direction`` is ``INCOMING`` (a deposit:
    pull from the customer's bank) or ``OUTGOING`` (a withdrawal: push to it); ``amount`` is a
    USD decimal string. The workflow submits a transfer once it is booked (provisional credit or
    hold), waits the ACH settlement days, then asks for its outcome until the bank decides.
    Calls may be retried (they are Temporal activities), so both must be safe to repeat.
    """

    async def submit(self, transfer_id: str, account_id: str, direction: str, amount: str) -> str:
        """Originate the ACH entry for this transfer and return the bank's reference for it (a
        trace number). Submitting the same transfer id again must not originate a second entry."""
        ...

    async def outcome(self, transfer_id: str, account_id: str, amount: str) -> str:
        """Where a submitted transfer stands: :data:`SETTLE` (the money moved), :data:`RETURN`
        (a deposit was returned, e.g. R01 insufficient funds, or a withdrawal failed to send) or
        :data:`HOLD` (still pending: ask again later). Once it answers settle or return the
        workflow books that and stops asking."""
        ...


class Clearinghouse(Protocol):
    """The clearinghouse: the street's record of the trades Sherwood's venues executed, against
    which each business date's settlement is reconciled (breaks are reported, never booked)."""

    async def report(self, settle: date) -> list[StreetFill] | None:
        """Every fill the street settles on business date ``settle`` (T+1 of its trade date), as
        the venues reported it: venue, ExecID, quantity and price, one :class:`StreetFill` per
        (venue, ExecID). ``None`` when no report is available: the settlement report then records
        no street figures and finds no breaks."""
        ...


class Announcements(Protocol):
    """The corporate-action announcements feed (a data vendor, DTC): what was announced with an
    ex-date or payable date in ``[since, until]``, each as the vendor's record (a mapping in
    Alpaca's announcement fields: ``id``, ``ca_type``, ``symbol``, ``ex_date``, ``record_date``,
    ``payable_date``, ``cash``, ``old_rate``, ``new_rate``). Sherwood validates every record
    (:func:`domain.corporate_actions.parse_announcement`) before using it. Safe to repeat."""

    async def announced(self, since: date, until: date) -> list[dict[str, object]]:
        ...
