"""A credit to a customer balance that is below zero is always taken.

``ledger_post`` refused any posting that left a customer balance below zero, a credit included:
an account whose cash is below zero (a shortfall: a returned deposit spent, a fill above its
hold) could not receive a deposit smaller than what it owes ("cash would go below zero"), though
the deposit moves it toward zero. Only a change that lowers a balance is checked now. The
function is rewritten in place from its current definition (one condition changes), so its
signature, grants and the rest of its body stay as the first migration made them.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

OLD = "IF v_bal + v_acc.delta < 0 AND NOT p_allow_negative"
NEW = "IF v_bal + v_acc.delta < 0 AND v_acc.delta < 0 AND NOT p_allow_negative"

UPGRADE = f"""
DO $upgrade$
DECLARE d text;
BEGIN
    SELECT pg_get_functiondef('ledger_post'::regproc) INTO d;
    IF position('{OLD}' IN d) = 0 THEN
        RAISE EXCEPTION 'ledger_post does not hold the condition this migration changes';
    END IF;
    EXECUTE replace(d, '{OLD}', '{NEW}');
END
$upgrade$;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    raise NotImplementedError("the shard schema holds the ledger of record; it is never dropped")
