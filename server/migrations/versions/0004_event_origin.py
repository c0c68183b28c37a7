"""Who stored each event (agent or collector), and events' host set to the enrolled hostname.

Before this revision an agent could post the collector's own event types and name any host;
both were shown as the collector's word. The origin column is set by who stores a row, never
from its body. Of the rows stored earlier, an ``agent.*`` event is the collector's only where
its occurrence and arrival times are the same instant, as the collector wrote its own (one
clock reading for both); an agent cannot hit its own arrival time to the microsecond, so a
forged one stays the agent's. Hosts become the enrolled hostname, the agent's claim staying
in the body, where the review API shows it as ``claimed_host``.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 03:40:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.add_column(sa.Column('origin', sa.String(length=16), server_default='agent', nullable=False))
    op.execute("UPDATE events SET origin = 'collector' WHERE type LIKE 'agent.%' AND occurred_at = received_at")
    op.execute(
        "UPDATE events SET host = (SELECT agents.hostname FROM agents WHERE agents.id = events.agent_id) "
        "WHERE host IS NULL OR host <> (SELECT agents.hostname FROM agents WHERE agents.id = events.agent_id)"
    )


def downgrade() -> None:
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.drop_column('origin')
