"""The ledger finds an account by its key, not by scanning every account of the shard.

``ledger_account_id`` (called by ``ledger_post`` for every entry of every posting: a filled
order posts three times) looked its account up with ``owner_id IS NOT DISTINCT FROM p_owner AND
name = p_name``. Postgres cannot use a btree index for ``IS NOT DISTINCT FROM``, so each lookup
read the whole of ``ledger_accounts``: a few rows in the tests, several per customer in a
shard of record (cash, held cash, every position). It now asks ``owner_id IS NULL`` for a house
account and ``owner_id = p_owner`` for a customer's, both probes of the
``UNIQUE NULLS NOT DISTINCT (owner_id, name)`` index. Nothing else changes: same signature
(``CREATE OR REPLACE`` keeps its grants), same errors, same creation of a missing account.

Revision ID: 0017
Revises: 0016
"""

from __future__ import annotations

from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

UPGRADE = """
CREATE OR REPLACE FUNCTION ledger_account_id(p_owner uuid, p_name text, p_currency text,
                                             p_stripes int)
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    v_id bigint;
    v_cur text;
BEGIN
    -- two statements, not one with IS NOT DISTINCT FROM: only these can probe the index
    IF p_owner IS NULL THEN
        SELECT id, currency INTO v_id, v_cur FROM ledger_accounts
         WHERE owner_id IS NULL AND name = p_name;
    ELSE
        SELECT id, currency INTO v_id, v_cur FROM ledger_accounts
         WHERE owner_id = p_owner AND name = p_name;
    END IF;
    IF NOT FOUND THEN
        IF p_owner IS NOT NULL AND NOT EXISTS (SELECT 1 FROM accounts WHERE id = p_owner) THEN
            RAISE EXCEPTION USING ERRCODE = 'SW404', MESSAGE = format('unknown account %s', p_owner);
        END IF;
        IF NOT EXISTS (SELECT 1 FROM currencies WHERE code = p_currency) THEN
            RAISE EXCEPTION USING ERRCODE = 'SW422', MESSAGE = format('unknown currency %s', p_currency);
        END IF;
        INSERT INTO ledger_accounts (owner_id, name, currency, non_negative, stripes)
        VALUES (p_owner, p_name, p_currency, p_owner IS NOT NULL,
                CASE WHEN p_owner IS NULL THEN p_stripes ELSE 1 END)
        ON CONFLICT DO NOTHING
        RETURNING id INTO v_id;
        IF v_id IS NULL THEN  -- created concurrently
            IF p_owner IS NULL THEN
                SELECT id, currency INTO v_id, v_cur FROM ledger_accounts
                 WHERE owner_id IS NULL AND name = p_name;
            ELSE
                SELECT id, currency INTO v_id, v_cur FROM ledger_accounts
                 WHERE owner_id = p_owner AND name = p_name;
            END IF;
        ELSE
            v_cur := p_currency;
            INSERT INTO balances (ledger_account_id, stripe)
            SELECT v_id, s FROM generate_series(0, CASE WHEN p_owner IS NULL THEN p_stripes - 1 ELSE 0 END) s;
        END IF;
    END IF;
    IF v_cur <> p_currency THEN
        RAISE EXCEPTION USING ERRCODE = 'SW422',
            MESSAGE = format('ledger account %s holds %s, not %s', p_name, v_cur, p_currency);
    END IF;
    RETURN v_id;
END $$;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    raise NotImplementedError("the shard schema holds the ledger of record; it is never dropped")
