"""Execution gateway schema: outbound sends (ClOrdID reservations) and inbound venue reports.

Revision ID: g0001
"""

from __future__ import annotations

from alembic import op

revision = "g0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE gateway_orders (
            cl_ord_id   text PRIMARY KEY,
            order_id    text NOT NULL,
            venue       text NOT NULL,
            msg_type    text NOT NULL DEFAULT 'D' CHECK (msg_type IN ('D', 'F', 'H')),
            status      text NOT NULL DEFAULT 'sending' CHECK (status IN ('sending', 'sent')),
            attempts    integer NOT NULL DEFAULT 1,
            msg_seq_num integer,
            created_at  timestamptz NOT NULL DEFAULT now(),
            sent_at     timestamptz
        );
        CREATE INDEX gateway_orders_order ON gateway_orders (order_id);

        CREATE TABLE gateway_reports (
            id              bigserial NOT NULL UNIQUE,
            venue           text NOT NULL,
            exec_id         text NOT NULL,
            order_id        text NOT NULL,
            cl_ord_id       text NOT NULL,
            msg_type        text NOT NULL,
            payload         jsonb NOT NULL,
            received_at     timestamptz NOT NULL DEFAULT now(),
            delivered_at    timestamptz,
            attempts        integer NOT NULL DEFAULT 0,
            next_attempt_at timestamptz NOT NULL DEFAULT now(),
            last_error      text,
            PRIMARY KEY (venue, exec_id)
        );
        CREATE INDEX gateway_reports_undelivered ON gateway_reports (next_attempt_at, id)
            WHERE delivered_at IS NULL;
        CREATE INDEX gateway_reports_undelivered_order ON gateway_reports (order_id)
            WHERE delivered_at IS NULL;
        CREATE INDEX gateway_reports_order ON gateway_reports (order_id, id);
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE gateway_reports; DROP TABLE gateway_orders;")
