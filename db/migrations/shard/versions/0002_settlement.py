"""Back office: settlement (settled executions, runs, per-shard netting), end-of-day ledger
reconciliation records and trading halts, ACH transfers (+ audit, shortfalls), good-faith
violations and account restrictions.

``executions`` stays untouched (append-only in spirit): a settled execution is a row in
``settlements`` keyed by the execution's (venue, exec_id).

Revision ID: 0002
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

SCHEMA = r"""
CREATE TABLE settlement_runs (
    business_date   date PRIMARY KEY,
    status          text NOT NULL CHECK (status IN ('done', 'no_session')),
    executions      integer NOT NULL DEFAULT 0,
    accounts        integer NOT NULL DEFAULT 0,
    clearing_txn_id text REFERENCES ledger_transactions(id),
    started_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    finished_at     timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE TABLE settlements (
    venue         text NOT NULL,
    exec_id       text NOT NULL,
    account_id    uuid NOT NULL,
    settled_on    date NOT NULL REFERENCES settlement_runs(business_date),
    ledger_txn_id text NOT NULL REFERENCES ledger_transactions(id),
    created_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (venue, exec_id),
    FOREIGN KEY (venue, exec_id) REFERENCES executions (venue, exec_id)
);
CREATE INDEX settlements_settled_on ON settlements (settled_on);

CREATE TABLE settlement_netting (
    business_date date NOT NULL REFERENCES settlement_runs(business_date),
    symbol        text NOT NULL,
    bought        numeric(38, 10) NOT NULL,
    sold          numeric(38, 10) NOT NULL,
    buy_value     numeric(38, 10) NOT NULL,
    sell_value    numeric(38, 10) NOT NULL,
    fills         integer NOT NULL,
    PRIMARY KEY (business_date, symbol)
);

CREATE TABLE reconciliation_runs (
    id               bigserial PRIMARY KEY,
    business_date    date,
    ok               boolean NOT NULL,
    accounts_checked integer NOT NULL,
    mismatches       jsonb NOT NULL DEFAULT '[]',
    unbalanced       jsonb NOT NULL DEFAULT '[]',
    created_at       timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE TABLE shard_halts (
    id         bigserial PRIMARY KEY,
    reason     text NOT NULL,
    details    jsonb NOT NULL DEFAULT '{}',
    reconciliation_run_id bigint REFERENCES reconciliation_runs(id),
    created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    cleared_at timestamptz,
    cleared_by text,
    clear_note text
);
CREATE INDEX shard_halts_active ON shard_halts (id) WHERE cleared_at IS NULL;

CREATE TABLE transfers (
    id                   uuid PRIMARY KEY,
    account_id           uuid NOT NULL REFERENCES accounts(id),
    direction            text NOT NULL CHECK (direction IN ('INCOMING', 'OUTGOING')),
    transfer_type        text NOT NULL DEFAULT 'ach',
    amount               numeric(38, 10) NOT NULL CHECK (amount > 0),
    request_hash         text NOT NULL,
    status               text NOT NULL,
    reason               text,
    expected_settle_date date,
    provisional_at       timestamptz,
    settled_at           timestamptz,
    created_at           timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at           timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX transfers_account ON transfers (account_id, created_at DESC);

CREATE TABLE transfer_events (
    id            bigserial PRIMARY KEY,
    transfer_id   uuid NOT NULL REFERENCES transfers(id),
    account_id    uuid NOT NULL,
    from_status   text,
    to_status     text NOT NULL,
    reason        text,
    ledger_txn_id text REFERENCES ledger_transactions(id),
    created_at    timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX transfer_events_transfer ON transfer_events (transfer_id, id);

CREATE TABLE ach_shortfalls (
    id          bigserial PRIMARY KEY,
    transfer_id uuid NOT NULL UNIQUE REFERENCES transfers(id),
    account_id  uuid NOT NULL,
    amount      numeric(38, 10) NOT NULL,
    shortfall   numeric(38, 10) NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    resolved_at timestamptz
);

CREATE TABLE gfv_violations (
    id               bigserial PRIMARY KEY,
    account_id       uuid NOT NULL REFERENCES accounts(id),
    symbol           text NOT NULL,
    sale_trade_date  date NOT NULL,
    buy_order_id     uuid NOT NULL,
    qty              numeric(38, 10) NOT NULL,
    funds_settle_date date NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    UNIQUE (account_id, symbol, sale_trade_date, buy_order_id)
);
CREATE INDEX gfv_account ON gfv_violations (account_id, sale_trade_date);

CREATE TABLE account_restrictions (
    id          bigserial PRIMARY KEY,
    account_id  uuid NOT NULL REFERENCES accounts(id),
    kind        text NOT NULL CHECK (kind IN ('settled_cash_only')),
    reason      text NOT NULL,
    starts_on   date NOT NULL,
    until       date NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    UNIQUE (account_id, kind, starts_on)
);

CREATE TRIGGER settlements_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON settlements
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_modification();
CREATE TRIGGER transfer_events_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON transfer_events
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_modification();
CREATE TRIGGER gfv_violations_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON gfv_violations
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_modification();
"""


def upgrade() -> None:
    op.execute(SCHEMA)


def downgrade() -> None:
    raise NotImplementedError("the shard schema holds the ledger of record; it is never dropped")
