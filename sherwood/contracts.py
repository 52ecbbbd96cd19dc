"""One home for the names that cross processes: Temporal task queues, signal and update names,
search-attribute keys, and the Redis keys and channels.

A name written in two processes must be the same string in both; when it lives here, a rename
is one edit and the type checker finds every user. Workflow handlers are declared with these
names, and callers use the typed handler references (``OrderWorkflow.cancel``), never a string.

Deliberately only names: no I/O, no settings. Importable inside workflow code (it imports only
``temporalio.common``).
"""

from __future__ import annotations

from dataclasses import dataclass

from temporalio.common import SearchAttributeKey

# --- Temporal task queues ---------------------------------------------------------------------

GATEWAY_TASK_QUEUE = "execution-gateway"  # the execution gateway's activities (default)
BACKOFFICE_TASK_QUEUE = "backoffice"  # settlement, reconciliation, cross-shard activities


def shard_task_queue(shard: int) -> str:
    """Order workflows and their local activities of one shard."""
    return f"shard-{shard}"


def trigger_task_queue(shard: int) -> str:
    """The broker-held triggers of one shard's orders (``activities.trigger``: long-running,
    heartbeating activities, served by that shard's worker process)."""
    return f"shard-{shard}-triggers"


def backoffice_shard_queue(shard: int) -> str:
    """Deposits, withdrawals and the shard-local back-office activities of one shard."""
    return f"backoffice-shard-{shard}"


# --- signals and updates ----------------------------------------------------------------------

EXECUTION_REPORT_SIGNAL = "execution_report"  # gateway -> order workflow: one VenueEvent
ACCEPTED_UPDATE = "accepted"  # order and transfer workflows: wait for the accept (update-with-start)
CANCEL_UPDATE = "cancel"  # order workflow: the customer cancels
RESOLVE_UPDATE = "resolve"  # order workflow: an operator resolves a STUCK order
REPLACE_UPDATE = "replace"  # order workflow: the customer replaces a working order (PATCH)
GROUP_CANCEL_SIGNAL = "group_cancel"  # order-group workflow -> a leg's order workflow: cancel it
GROUP_WORKFLOW_PREFIX = "group-"  # an order group's workflow id: this + the parent order's id

# --- search attributes ------------------------------------------------------------------------

ORDER_STATE = SearchAttributeKey.for_keyword("OrderState")
SYMBOL = SearchAttributeKey.for_keyword("Symbol")
ACCOUNT_ID = SearchAttributeKey.for_keyword("AccountId")
SHARD_ID = SearchAttributeKey.for_int("ShardId")
# what the Temporal server must have registered (name -> indexed type)
ORDER_SEARCH_ATTRIBUTES = {"OrderState": "Keyword", "Symbol": "Keyword", "AccountId": "Keyword",
                           "ShardId": "Int"}


# --- Redis --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RedisKeys:
    """Every Redis key and pub/sub channel of one stack (``prefix``: ``SHERWOOD_REDIS_PREFIX``)."""

    prefix: str = "sherwood"

    # market data (the read path)
    @property
    def quotes_latest(self) -> str:
        """Hash: symbol -> the latest quote (Alpaca's shape, plus ingest's sequence)."""
        return f"{self.prefix}:quotes:latest"

    @property
    def trades_latest(self) -> str:
        """Hash: symbol -> the latest trade."""
        return f"{self.prefix}:trades:latest"

    @property
    def md_channel_prefix(self) -> str:
        return f"{self.prefix}:md:"

    def md_channel(self, symbol: str) -> str:
        """Pub/sub channel of one symbol's quotes, trades and bars."""
        return f"{self.md_channel_prefix}{symbol}"

    @property
    def md_dropped(self) -> str:
        """Hash: reason -> ticks ingest refused."""
        return f"{self.prefix}:md:dropped"

    @property
    def md_accepted(self) -> str:
        """Hash: kind -> ticks ingest accepted."""
        return f"{self.prefix}:md:accepted"

    @property
    def md_seq(self) -> str:
        """Hash: symbol -> the last sequence number published."""
        return f"{self.prefix}:md:seq"

    # trading controls
    @property
    def halts(self) -> str:
        """Set of halted symbols (mirror of the directory's controls)."""
        return f"{self.prefix}:halts"

    @property
    def controls(self) -> str:
        """Hash: symbol -> its halt/restriction (mirror of the directory's controls)."""
        return f"{self.prefix}:controls"

    @property
    def controls_events(self) -> str:
        """Channel: a control changed (every process's cache refreshes)."""
        return f"{self.prefix}:controls:events"

    # accounts and orders
    def account_shard(self, account_id: object) -> str:
        """The shard of an account (a cache of the directory)."""
        return f"{self.prefix}:account_shard:{account_id}"

    def trade_updates(self, account_id: object) -> str:
        """Channel: the account's order updates (Alpaca ``trade_updates``)."""
        return f"{self.prefix}:trade_updates:{account_id}"

    def admission(self, shard: int) -> str:
        """Sorted set: the orders of one shard in transit (order id -> when its slot lapses, ms
        of Redis's clock), counted by every API process and released by the shard's worker
        (api/admission.py)."""
        return f"{self.prefix}:admission:{shard}"

    def admission_holds(self, shard: int) -> str:
        """Hash: of each order in :meth:`admission`, the holds on its slot still to be let go
        (the API's until its answer, the shard's until the order is out of transit;
        sherwood/admission_slots.py)."""
        return f"{self.prefix}:admission_holds:{shard}"

    def admission_freed(self, shard: int) -> str:
        """Channel: a shard's admission slots were given back (payload: how many), for the API
        processes' requests waiting for one (api/admission.py)."""
        return f"{self.prefix}:admission_freed:{shard}"

    def admission_freed_pattern(self) -> str:
        """Channel pattern: every shard's :meth:`admission_freed`."""
        return f"{self.prefix}:admission_freed:*"

    def ratelimit(self, bucket: str) -> str:
        """A token bucket shared by every API process."""
        return f"{self.prefix}:ratelimit:{bucket}"

    # the simulated bank's test instructions
    def bank_instruction(self, subject: str) -> str:
        return f"{self.prefix}:bank:instr:{subject}"
