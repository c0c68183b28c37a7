"""Egress: each vendor's allowed git remotes and upload destinations, and the events' destination host column.

Events stored before issue 17 have no destination, so the column starts empty for them.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 15:40:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('egress_policies',
    sa.Column('vendor', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('allowed_remotes', sa.JSON(), nullable=False),
    sa.Column('report_allowed', sa.Boolean(), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_by', sa.String(length=128), nullable=False),
    sa.ForeignKeyConstraint(['vendor'], ['vendors.id'], name=op.f('fk_egress_policies_vendor_vendors')),
    sa.PrimaryKeyConstraint('vendor', name=op.f('pk_egress_policies'))
    )
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.add_column(sa.Column('destination_host', sa.String(length=255), nullable=True))
        # Partial: only egress rows have a destination, so no other insert pays for the index.
        batch_op.create_index('ix_events_destination_host_seq', ['destination_host', 'seq'], unique=False,
                              sqlite_where=sa.text('destination_host IS NOT NULL'), postgresql_where=sa.text('destination_host IS NOT NULL'))


def downgrade() -> None:
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.drop_index('ix_events_destination_host_seq')
        batch_op.drop_column('destination_host')
    op.drop_table('egress_policies')
