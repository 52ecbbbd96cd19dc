"""Symbol controls (halts, close-only and blocked restrictions), set by operations or the feed,
with an append-only history of every change.

Revision ID: d0003
"""

from __future__ import annotations

from alembic import op

revision = "d0003"
down_revision = "d0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE symbol_controls (
            symbol      text PRIMARY KEY,
            halted      boolean NOT NULL DEFAULT false,
            restriction text CHECK (restriction IN ('close_only', 'blocked')),
            reason      text NOT NULL DEFAULT '',
            updated_by  text NOT NULL,
            updated_at  timestamptz NOT NULL DEFAULT clock_timestamp()
        );
        CREATE TABLE symbol_control_events (
            id          bigserial PRIMARY KEY,
            symbol      text NOT NULL,
            halted      boolean NOT NULL,
            restriction text,
            reason      text NOT NULL,
            actor       text NOT NULL,
            created_at  timestamptz NOT NULL DEFAULT clock_timestamp()
        );
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE symbol_control_events; DROP TABLE symbol_controls;")
