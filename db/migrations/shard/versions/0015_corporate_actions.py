"""Corporate actions: the announcements the back office applied, and each account's share.

- ``corporate_actions``: every announcement the CorporateActions workflow took from the
  announcements source (``GET /v2/corporate_actions/announcements`` reads it).
- ``corporate_action_applications``: one row per (announcement, account) applied -- the
  dividend credited or the split's old and new quantity and cash in lieu -- written in the same
  transaction as its ledger transaction, so a rerun skips whoever has it already.

Both append-only.

Revision ID: 0015
Revises: 0014
"""

from __future__ import annotations

from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
CREATE TABLE corporate_actions (
    id            text PRIMARY KEY CHECK (length(id) BETWEEN 1 AND 64),
    ca_type       text NOT NULL CHECK (ca_type IN ('dividend', 'split', 'symbol_change')),
    ca_sub_type   text NOT NULL,
    symbol        text NOT NULL,
    ex_date       date NOT NULL,
    record_date   date,
    payable_date  date,
    cash          numeric(38, 10),
    old_rate      numeric(38, 10),
    new_rate      numeric(38, 10),
    new_symbol    text,
    recorded_at   timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE corporate_action_applications (
    announcement_id text NOT NULL REFERENCES corporate_actions(id),
    account_id      uuid NOT NULL REFERENCES accounts(id),
    symbol          text NOT NULL,
    qty             numeric(38, 10) NOT NULL,
    new_qty         numeric(38, 10),
    in_lieu_old     numeric(38, 10) NOT NULL DEFAULT 0,
    close_price     numeric(38, 10),
    cash            numeric(38, 10) NOT NULL DEFAULT 0,
    ledger_txn_id   text REFERENCES ledger_transactions(id),
    applied_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (announcement_id, account_id)
);
CREATE INDEX corporate_action_applications_account ON corporate_action_applications (account_id, applied_at);
CREATE TRIGGER corporate_actions_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON corporate_actions
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_modification();
CREATE TRIGGER corporate_action_applications_append_only BEFORE UPDATE OR DELETE OR TRUNCATE
    ON corporate_action_applications FOR EACH STATEMENT EXECUTE FUNCTION refuse_modification();
""")


def downgrade() -> None:
    raise NotImplementedError("the shard schema holds the ledger of record; it is never dropped")
