"""``executions.exec_type`` holds the order core's event kind from here on.

The gateway now hands the order core a :class:`domain.execution.VenueEvent` instead of a
FIX-coded report, so new rows record its kind (``fill``, ``ack``, ``canceled``, ``expired``,
``rejected``, ``status``, ``cancel_rejected``, ... or ``refused`` for a fill the rules refused).
Rows written before keep what they were written with (the FIX ExecType: ``F`` for a fill,
``cancel_reject``, ``refused``): executions are never rewritten. Readers that need the fills use
``qty > 0``, which both generations satisfy exactly for booked fills; the full venue report
of each row is in ``raw``.

Revision ID: 0003
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""COMMENT ON COLUMN executions.exec_type IS
        'VenueEventKind of the event (fill, ack, canceled, ...; refused: a fill the rules refused). '
        'Rows before migration 0003: the FIX ExecType (F = fill). Booked fills: qty > 0.'""")


def downgrade() -> None:
    raise NotImplementedError("the shard schema holds the ledger of record; it is never dropped")
