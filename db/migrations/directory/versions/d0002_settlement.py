"""Directory: the cross-shard netting report per business date and symbol, and the breaks found
against the clearinghouse's report.

Revision ID: d0002
"""

from __future__ import annotations

from alembic import op

revision = "d0002"
down_revision = "d0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE settlement_reports (
            business_date date NOT NULL,
            symbol        text NOT NULL,
            bought        numeric(38, 10) NOT NULL,
            sold          numeric(38, 10) NOT NULL,
            net_shares    numeric(38, 10) NOT NULL,
            buy_value     numeric(38, 10) NOT NULL,
            sell_value    numeric(38, 10) NOT NULL,
            net_cash      numeric(38, 10) NOT NULL,
            fills         integer NOT NULL,
            created_at    timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (business_date, symbol)
        );
        CREATE TABLE settlement_report_runs (
            business_date date PRIMARY KEY,
            status        text NOT NULL,
            shards        integer NOT NULL,
            executions    integer NOT NULL,
            breaks        integer NOT NULL,
            street_fills  integer,
            updated_at    timestamptz NOT NULL DEFAULT now()
        );
        CREATE TABLE settlement_breaks (
            id            bigserial PRIMARY KEY,
            business_date date NOT NULL,
            kind          text NOT NULL,
            venue         text NOT NULL,
            exec_id       text NOT NULL,
            ours          text,
            theirs        text,
            created_at    timestamptz NOT NULL DEFAULT now()
        );
        CREATE INDEX settlement_breaks_date ON settlement_breaks (business_date);
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE settlement_breaks; DROP TABLE settlement_report_runs; "
               "DROP TABLE settlement_reports;")
