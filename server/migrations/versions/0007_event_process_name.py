"""Events keep their process executable's base name in a column, so the list can be filtered by program.

Events stored before issue 16 carry no process, so the column starts empty for them.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 12:20:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.add_column(sa.Column('process_name', sa.String(length=255), nullable=True))
        batch_op.create_index('ix_events_process_name_seq', ['process_name', 'seq'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.drop_index('ix_events_process_name_seq')
        batch_op.drop_column('process_name')
