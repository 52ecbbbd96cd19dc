"""Directory: operator identity. Ops keys (separate from customer keys, scoped, expiring,
revocable), the append-only ``ops_audit`` of every operations action, and resolutions waiting
for a second operator's approval (four eyes). Legacy ``api_keys`` of role ``ops`` are revoked:
they grant nothing any more.

Revision ID: d0004
"""

from __future__ import annotations

from alembic import op

revision = "d0004"
down_revision = "d0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE ops_keys (
            key_id      text PRIMARY KEY,
            secret_hash text NOT NULL,
            holder      text NOT NULL CHECK (length(holder) BETWEEN 1 AND 64),
            scopes      text[] NOT NULL CHECK (scopes <@ ARRAY['read', 'halt', 'restrict',
                                 'resolve', 'settlement', 'keys']::text[]
                                 AND cardinality(scopes) > 0),
            created_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
            expires_at  timestamptz NOT NULL,
            revoked_at  timestamptz,
            rotated_from text REFERENCES ops_keys(key_id)
        );
        CREATE TABLE ops_audit (
            id         bigserial PRIMARY KEY,
            at         timestamptz NOT NULL DEFAULT clock_timestamp(),
            actor      text NOT NULL CHECK (length(actor) > 0),
            key_id     text,
            action     text NOT NULL,
            target     text NOT NULL DEFAULT '',
            reason     text NOT NULL CHECK (length(btrim(reason)) > 0),
            detail     jsonb NOT NULL DEFAULT '{}'::jsonb
        );
        CREATE INDEX ops_audit_at ON ops_audit (at);
        CREATE FUNCTION ops_audit_refuse_modification() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION USING ERRCODE = 'SW403',
                MESSAGE = format('%s is append-only: %s refused', TG_TABLE_NAME, TG_OP);
        END $$;
        CREATE TRIGGER ops_audit_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON ops_audit
            FOR EACH STATEMENT EXECUTE FUNCTION ops_audit_refuse_modification();
        CREATE TABLE ops_resolutions (
            id            uuid PRIMARY KEY,
            order_id      text NOT NULL,
            payload       jsonb NOT NULL,
            notional      numeric(38, 10) NOT NULL,
            requested_by  text NOT NULL,
            requested_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
            status        text NOT NULL DEFAULT 'pending'
                          CHECK (status IN ('pending', 'approved')),
            approved_by   text,
            approved_at   timestamptz,
            CHECK (approved_by IS NULL OR approved_by <> requested_by)
        );
        CREATE INDEX ops_resolutions_pending ON ops_resolutions (order_id)
            WHERE status = 'pending';
        UPDATE api_keys SET revoked_at = now() WHERE role = 'ops' AND revoked_at IS NULL;
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE ops_resolutions; DROP TRIGGER ops_audit_append_only ON ops_audit; "
               "DROP TABLE ops_audit; DROP FUNCTION ops_audit_refuse_modification(); "
               "DROP TABLE ops_keys;")
