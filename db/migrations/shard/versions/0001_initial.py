"""Shard schema: accounts, ledger (accounts, transactions, entries, balances), orders, audit,
executions, outbox, assets; the database-side ledger guarantees (balanced at commit, append-only,
one posting function that checks limits under row locks).

Revision ID: 0001
"""

from __future__ import annotations

from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

SCHEMA = r"""
CREATE TABLE currencies (
    code  text PRIMARY KEY,
    kind  text NOT NULL CHECK (kind IN ('cash', 'security')),
    scale int  NOT NULL CHECK (scale BETWEEN 0 AND 10)
);
INSERT INTO currencies VALUES ('USD', 'cash', 4);

CREATE TABLE assets (
    id             uuid PRIMARY KEY,
    symbol         text NOT NULL UNIQUE REFERENCES currencies(code),
    name           text NOT NULL,
    exchange       text NOT NULL,
    asset_class    text NOT NULL DEFAULT 'us_equity',
    status         text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'inactive')),
    tradable       boolean NOT NULL DEFAULT true,
    marginable     boolean NOT NULL DEFAULT false,
    shortable      boolean NOT NULL DEFAULT false,
    easy_to_borrow boolean NOT NULL DEFAULT false,
    fractionable   boolean NOT NULL DEFAULT false,
    restriction    text CHECK (restriction IN ('close_only', 'blocked')),
    restriction_reason text
);

CREATE TABLE accounts (
    id              uuid PRIMARY KEY,
    account_number  text NOT NULL UNIQUE,
    account_type    text NOT NULL CHECK (account_type IN ('cash', 'instant')),
    status          text NOT NULL DEFAULT 'ACTIVE',
    trading_blocked boolean NOT NULL DEFAULT false,
    blocked_reason  text,
    pattern_day_trader boolean NOT NULL DEFAULT false,
    created_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE ledger_accounts (
    id           bigserial PRIMARY KEY,
    owner_id     uuid REFERENCES accounts(id),
    name         text NOT NULL,
    currency     text NOT NULL REFERENCES currencies(code),
    non_negative boolean NOT NULL,
    stripes      smallint NOT NULL DEFAULT 1 CHECK (stripes >= 1),
    created_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE NULLS NOT DISTINCT (owner_id, name),
    UNIQUE (id, currency),
    CHECK (owner_id IS NOT NULL OR NOT non_negative)
);

CREATE TABLE ledger_transactions (
    id           text PRIMARY KEY,
    kind         text NOT NULL,
    account_id   uuid,
    payload_hash text NOT NULL,
    status       text NOT NULL CHECK (status IN ('posted', 'rejected')),
    error_code   text,
    error_detail text,
    memo         jsonb NOT NULL DEFAULT '{}',
    created_at   timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX ledger_transactions_account ON ledger_transactions (account_id, created_at);

CREATE TABLE ledger_entries (
    id                bigserial PRIMARY KEY,
    txn_id            text NOT NULL REFERENCES ledger_transactions(id),
    ledger_account_id bigint NOT NULL,
    currency          text NOT NULL,
    amount            numeric(38, 10) NOT NULL CHECK (amount <> 0),
    created_at        timestamptz NOT NULL DEFAULT clock_timestamp(),
    FOREIGN KEY (ledger_account_id, currency) REFERENCES ledger_accounts (id, currency)
);
CREATE INDEX ledger_entries_txn ON ledger_entries (txn_id);
CREATE INDEX ledger_entries_account ON ledger_entries (ledger_account_id, id);

-- Cached balances. Customer accounts have one row (stripe 0); hot house accounts have several
-- stripes so concurrent writers update different rows; the balance is the sum of the stripes.
CREATE TABLE balances (
    ledger_account_id bigint NOT NULL REFERENCES ledger_accounts(id),
    stripe            smallint NOT NULL,
    balance           numeric(38, 10) NOT NULL DEFAULT 0,
    updated_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (ledger_account_id, stripe)
);

CREATE TABLE orders (
    id               uuid PRIMARY KEY,
    account_id       uuid NOT NULL REFERENCES accounts(id),
    client_order_id  text NOT NULL,
    request_hash     text NOT NULL,
    symbol           text NOT NULL,
    side             text NOT NULL CHECK (side IN ('buy', 'sell')),
    order_type       text NOT NULL CHECK (order_type IN ('market', 'limit', 'stop', 'stop_limit')),
    time_in_force    text NOT NULL CHECK (time_in_force IN ('day', 'gtc', 'ioc', 'fok', 'opg', 'cls')),
    qty              numeric(38, 10),
    notional         numeric(38, 10),
    limit_price      numeric(38, 10),
    stop_price       numeric(38, 10),
    extended_hours   boolean NOT NULL DEFAULT false,
    state            text NOT NULL,
    cl_ord_id        text NOT NULL UNIQUE,
    venue            text,
    venue_order_id   text,
    filled_qty       numeric(38, 10) NOT NULL DEFAULT 0,
    filled_avg_price numeric(38, 10),
    filled_value     numeric(38, 10) NOT NULL DEFAULT 0,
    hold_currency    text,
    hold_amount      numeric(38, 10) NOT NULL DEFAULT 0,
    reject_code      text,
    reject_reason    text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    submitted_at     timestamptz,
    filled_at        timestamptz,
    canceled_at      timestamptz,
    expired_at       timestamptz,
    failed_at        timestamptz,
    expires_at       timestamptz,
    actor            text NOT NULL DEFAULT 'customer',
    version          integer NOT NULL DEFAULT 0,
    UNIQUE (account_id, client_order_id)
);
CREATE INDEX orders_account_created ON orders (account_id, created_at DESC);
CREATE INDEX orders_open ON orders (state)
    WHERE state NOT IN ('FILLED', 'CANCELED', 'REJECTED', 'EXPIRED', 'FAILED');

CREATE TABLE order_events (
    id            bigserial PRIMARY KEY,
    order_id      uuid NOT NULL REFERENCES orders(id),
    account_id    uuid NOT NULL,
    seq           integer NOT NULL,
    event         text NOT NULL,
    actor         text NOT NULL,
    reason        text,
    from_state    text,
    to_state      text,
    ledger_txn_id text REFERENCES ledger_transactions(id),
    data          jsonb NOT NULL DEFAULT '{}',
    created_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    UNIQUE (order_id, seq)
);
CREATE INDEX order_events_account ON order_events (account_id, created_at);

CREATE TABLE executions (
    venue          text NOT NULL,
    exec_id        text NOT NULL,
    order_id       uuid NOT NULL REFERENCES orders(id),
    account_id     uuid NOT NULL,
    symbol         text NOT NULL,
    side           text NOT NULL,
    exec_type      text NOT NULL,
    qty            numeric(38, 10) NOT NULL DEFAULT 0,
    price          numeric(38, 10),
    cum_qty        numeric(38, 10),
    leaves_qty     numeric(38, 10),
    avg_px         numeric(38, 10),
    ledger_txn_id  text REFERENCES ledger_transactions(id),
    trade_date     date,
    settle_date    date,
    transact_time  timestamptz,
    received_at    timestamptz NOT NULL DEFAULT now(),
    raw            jsonb NOT NULL DEFAULT '{}',
    PRIMARY KEY (venue, exec_id)
);
CREATE INDEX executions_order ON executions (order_id);
CREATE INDEX executions_account ON executions (account_id, received_at);
CREATE INDEX executions_settle ON executions (settle_date) WHERE qty > 0;

CREATE TABLE outbox (
    id           bigserial PRIMARY KEY,
    topic        text NOT NULL,
    key          text NOT NULL,
    payload      jsonb NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    published_at timestamptz
);
CREATE INDEX outbox_unpublished ON outbox (id) WHERE published_at IS NULL;

-- Append-only tables: corrections are new rows, never edits. Statement-level, so even a
-- statement that matches no row is refused.
CREATE FUNCTION refuse_modification() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION USING ERRCODE = 'SW403',
        MESSAGE = format('%s is append-only: %s refused', TG_TABLE_NAME, TG_OP);
END $$;

CREATE TRIGGER ledger_entries_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON ledger_entries
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_modification();
CREATE TRIGGER ledger_transactions_append_only BEFORE UPDATE OR DELETE OR TRUNCATE
    ON ledger_transactions FOR EACH STATEMENT EXECUTE FUNCTION refuse_modification();
CREATE TRIGGER order_events_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON order_events
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_modification();

-- Every ledger transaction sums to zero per currency, checked by the database at commit, and
-- only posted transactions carry entries.
CREATE FUNCTION ledger_check_balanced() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    v_status text;
    v_bad record;
BEGIN
    SELECT status INTO v_status FROM ledger_transactions WHERE id = NEW.txn_id;
    IF v_status IS DISTINCT FROM 'posted' THEN
        RAISE EXCEPTION USING ERRCODE = 'SW400',
            MESSAGE = format('ledger transaction %s is %s and cannot carry entries', NEW.txn_id, v_status);
    END IF;
    SELECT currency, sum(amount) AS total INTO v_bad
      FROM ledger_entries WHERE txn_id = NEW.txn_id
     GROUP BY currency HAVING sum(amount) <> 0 LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'SW400',
            MESSAGE = format('ledger transaction %s does not balance: %s sums to %s',
                             NEW.txn_id, v_bad.currency, v_bad.total);
    END IF;
    RETURN NULL;
END $$;

CREATE CONSTRAINT TRIGGER ledger_entries_balanced AFTER INSERT ON ledger_entries
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION ledger_check_balanced();

-- Find or create one ledger account (and its balance rows).
CREATE FUNCTION ledger_account_id(p_owner uuid, p_name text, p_currency text, p_stripes int)
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    v_id bigint;
    v_cur text;
BEGIN
    SELECT id, currency INTO v_id, v_cur FROM ledger_accounts
     WHERE owner_id IS NOT DISTINCT FROM p_owner AND name = p_name;
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
            SELECT id, currency INTO v_id, v_cur FROM ledger_accounts
             WHERE owner_id IS NOT DISTINCT FROM p_owner AND name = p_name;
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

-- The one way to post a ledger transaction. Idempotent by id (same payload -> first outcome,
-- different payload -> SW409). Customer balances are locked in ledger-account-id order and
-- checked before any change; a limit violation is recorded as a rejected transaction so a replay
-- fails the same way. House balances are striped and taken with SKIP LOCKED so a hot house
-- account never serializes writers.
CREATE FUNCTION ledger_post(p_id text, p_kind text, p_account uuid, p_hash text, p_entries jsonb,
                            p_allow_negative boolean, p_memo jsonb, p_stripes int)
RETURNS TABLE (status text, error_code text, error_detail text, replayed boolean)
LANGUAGE plpgsql AS $$
DECLARE
    v_prev record;
    v_acc record;
    v_e jsonb;
    v_la bigint[] := '{}';
    v_cur text[] := '{}';
    v_amt numeric[] := '{}';
    v_name text[] := '{}';
    v_cust boolean[] := '{}';
    v_owner uuid;
    v_bal numeric;
    v_stripe smallint;
    v_fail text;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended(p_id, 0));
    SELECT t.status, t.error_code, t.error_detail, t.payload_hash INTO v_prev
      FROM ledger_transactions t WHERE t.id = p_id;
    IF FOUND THEN
        IF v_prev.payload_hash <> p_hash THEN
            RAISE EXCEPTION USING ERRCODE = 'SW409',
                MESSAGE = format('ledger transaction %s already exists with different entries', p_id);
        END IF;
        RETURN QUERY SELECT v_prev.status, v_prev.error_code, v_prev.error_detail, true;
        RETURN;
    END IF;

    FOR v_e IN SELECT * FROM jsonb_array_elements(p_entries) LOOP
        v_owner := NULLIF(v_e->>'o', '')::uuid;
        v_la := v_la || ledger_account_id(v_owner, v_e->>'n', v_e->>'c', p_stripes);
        v_cur := v_cur || (v_e->>'c');
        v_amt := v_amt || (v_e->>'a')::numeric;
        v_name := v_name || (v_e->>'n');
        v_cust := v_cust || (v_owner IS NOT NULL);
    END LOOP;

    -- Customer accounts: lock in id order and check every limit before changing anything.
    FOR v_acc IN SELECT u.la, min(u.name) AS name, sum(u.amt) AS delta
                   FROM unnest(v_la, v_amt, v_name, v_cust) AS u(la, amt, name, cust)
                  WHERE u.cust GROUP BY u.la ORDER BY u.la LOOP
        SELECT b.balance INTO v_bal FROM balances b
         WHERE b.ledger_account_id = v_acc.la AND b.stripe = 0 FOR UPDATE;
        IF v_bal + v_acc.delta < 0 AND NOT p_allow_negative AND v_fail IS NULL THEN
            v_fail := format('%s would go below zero: balance %s, change %s',
                             v_acc.name, trim_scale(v_bal), trim_scale(v_acc.delta));
        END IF;
    END LOOP;

    IF v_fail IS NOT NULL THEN
        INSERT INTO ledger_transactions (id, kind, account_id, payload_hash, status, error_code,
                                         error_detail, memo)
        VALUES (p_id, p_kind, p_account, p_hash, 'rejected', 'insufficient_funds', v_fail, p_memo);
        RETURN QUERY SELECT 'rejected'::text, 'insufficient_funds'::text, v_fail, false;
        RETURN;
    END IF;

    UPDATE balances b SET balance = b.balance + d.delta, updated_at = now()
      FROM (SELECT u.la, sum(u.amt) AS delta FROM unnest(v_la, v_amt, v_cust) AS u(la, amt, cust)
             WHERE u.cust GROUP BY u.la) d
     WHERE b.ledger_account_id = d.la AND b.stripe = 0;

    FOR v_acc IN SELECT u.la, sum(u.amt) AS delta
                   FROM unnest(v_la, v_amt, v_cust) AS u(la, amt, cust)
                  WHERE NOT u.cust GROUP BY u.la ORDER BY u.la LOOP
        SELECT b.stripe INTO v_stripe FROM balances b
         WHERE b.ledger_account_id = v_acc.la FOR UPDATE SKIP LOCKED LIMIT 1;
        IF NOT FOUND THEN  -- every stripe busy: wait for one at random
            SELECT b.stripe INTO v_stripe FROM balances b
             WHERE b.ledger_account_id = v_acc.la ORDER BY random() LIMIT 1;
        END IF;
        UPDATE balances b SET balance = b.balance + v_acc.delta, updated_at = now()
         WHERE b.ledger_account_id = v_acc.la AND b.stripe = v_stripe;
    END LOOP;

    INSERT INTO ledger_transactions (id, kind, account_id, payload_hash, status, memo)
    VALUES (p_id, p_kind, p_account, p_hash, 'posted', p_memo);
    INSERT INTO ledger_entries (txn_id, ledger_account_id, currency, amount)
    SELECT p_id, u.la, u.cur, u.amt FROM unnest(v_la, v_cur, v_amt) AS u(la, cur, amt);
    RETURN QUERY SELECT 'posted'::text, NULL::text, NULL::text, false;
END $$;
"""


def upgrade() -> None:
    op.execute(SCHEMA)
    _seed_assets()


def _seed_assets() -> None:
    from domain.assets import ASSETS

    for a in ASSETS:
        op.execute(
            "INSERT INTO currencies (code, kind, scale) VALUES "
            f"('{a.symbol}', 'security', 6) ON CONFLICT DO NOTHING"
        )
        name = a.name.replace("'", "''")
        op.execute(
            "INSERT INTO assets (id, symbol, name, exchange, tradable, marginable, shortable, "
            f"easy_to_borrow) VALUES ('{a.id}', '{a.symbol}', '{name}', '{a.exchange}', "
            f"{str(a.tradable).lower()}, true, true, true) ON CONFLICT DO NOTHING"
        )


def downgrade() -> None:
    raise NotImplementedError("the shard schema holds the ledger of record; it is never dropped")
