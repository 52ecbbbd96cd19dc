"""Corporate-action activities of the back office (the CorporateActions workflow's steps).

- ``fetch_announcements`` (queue ``backoffice``): the announcements due on a business date from
  the feed (:class:`domain.ports.Announcements`), validated; a record the rules refuse is
  returned with its reason (the workflow logs it as an error: visible, never applied).
- ``apply_corporate_actions`` (queue ``backoffice-shard-<n>``): on one shard, record each
  announcement, pay the dividends due (payable date), apply the splits due (ex-date). A split
  whose symbol still has open orders asks their workflows to cancel (the customer's order is
  canceled, as Alpaca does for splits) and fails retryably, as it does while shares of the
  symbol are unsettled; the workflow's retry policy bounds the wait.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio import activity
from temporalio.client import Client
from temporalio.exceptions import ApplicationError

from db import corporate_actions as store
from domain import calendar
from domain import corporate_actions as ca
from domain.errors import DomainError
from domain.ports import Announcements
from sherwood.faults import final_unless_transient

log = logging.getLogger(__name__)


@dataclass
class FetchAnnouncementsInput:
    business_date: str


@dataclass
class FetchedAnnouncements:
    due: list[dict[str, str | None]] = field(default_factory=list)  # Announcement.to_wire()
    refused: list[str] = field(default_factory=list)  # "<id or record>: <reason>"


@dataclass
class ApplyCorporateActionsInput:
    business_date: str
    announcements: list[dict[str, str | None]]
    # the instant dividend entitlement is read at; None: the close of the session before the
    # ex-date (a test's simulated session names it)
    entitled_at: str | None = None


@dataclass
class AppliedCorporateActions:
    shard: int
    dividends_paid: int = 0
    splits_applied: int = 0
    symbol_changes: int = 0


def entitlement_instant(ex_date: date) -> datetime:
    """The close of the last session before the ex-date (T+1: positions owned by then)."""
    d = ex_date - timedelta(days=1)
    while not calendar.is_session(d):
        d -= timedelta(days=1)
    hours = calendar.session_hours(d)
    return hours[1] if hours else datetime.combine(d, time(23, 59), UTC)


class AnnouncementActivities:
    def __init__(self, feed: Announcements) -> None:
        self.feed = feed

    @activity.defn(name="fetch_announcements")
    @final_unless_transient
    async def fetch_announcements(self, inp: FetchAnnouncementsInput) -> FetchedAnnouncements:
        d = date.fromisoformat(inp.business_date)
        out = FetchedAnnouncements()
        for record in await self.feed.announced(d - timedelta(days=7), d):
            try:
                ann = ca.parse_announcement(record)
            except DomainError as exc:
                out.refused.append(f"{str(record.get('id'))[:64]}: {exc.code}: {exc}")
                continue
            if d in (ann.ex_date, ann.payable_date):
                out.due.append(ann.to_wire())
        return out

    def all(self) -> list[Callable[..., Any]]:
        return [self.fetch_announcements]


class CorporateActionActivities:
    def __init__(self, engine: AsyncEngine, shard: int, client: Client | None,
                 house_stripes: int = 32) -> None:
        self.engine = engine
        self.shard = shard
        self.client = client
        self.house_stripes = house_stripes

    @activity.defn(name="apply_corporate_actions")
    @final_unless_transient
    async def apply_corporate_actions(self, inp: ApplyCorporateActionsInput) -> AppliedCorporateActions:
        d = date.fromisoformat(inp.business_date)
        out = AppliedCorporateActions(self.shard)
        for wire in inp.announcements:
            ann = ca.parse_announcement(wire)
            await store.record(self.engine, ann)
            if ann.ca_type == "dividend" and ann.payable_date == d:
                at = (datetime.fromisoformat(inp.entitled_at) if inp.entitled_at
                      else entitlement_instant(ann.ex_date))
                out.dividends_paid += await store.pay_dividend(self.engine, ann, at, self.house_stripes)
            elif ann.ca_type == "split" and ann.ex_date == d:
                await self._clear_for_split(ann)
                out.splits_applied += await store.apply_split(self.engine, ann, self.house_stripes)
            elif ann.ca_type == "symbol_change" and ann.ex_date == d:
                await self._clear_for_split(ann)
                out.symbol_changes += await store.apply_symbol_change(self.engine, ann,
                                                                      self.house_stripes)
        return out

    async def _clear_for_split(self, ann: ca.Announcement) -> None:
        blockers = await store.split_blockers(self.engine, ann.symbol)
        if blockers.clear:
            return
        if blockers.open_orders and self.client is not None:
            from workflows.order import OrderWorkflow  # the order's own workflow cancels it

            for order_id in blockers.open_orders:
                try:
                    await self.client.get_workflow_handle_for(OrderWorkflow.run, order_id).execute_update(
                        OrderWorkflow.cancel)
                except Exception as exc:  # already ending, or its workflow is gone: checked again
                    log.warning("split %s: cancel of order %s: %s", ann.id, order_id, exc)
        raise ApplicationError(
            f"split {ann.id} of {ann.symbol} waits: {len(blockers.open_orders)} open order(s) "
            f"being canceled, shares unsettled or held: {blockers.unsettled}",
            type="split_waiting")  # retryable: the workflow's policy bounds the wait

    def all(self) -> list[Callable[..., Any]]:
        return [self.apply_corporate_actions]
