"""Daily event counts per vendor for the vendors overview, and how far events are folded in.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24 03:33:27.671534
"""

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('stats_progress',
    sa.Column('id', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('seq', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_stats_progress'))
    )
    op.create_table('event_counts',
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('day', sa.Date(), nullable=False),
    sa.Column('vendor_id', sa.Integer(), nullable=False),
    sa.Column('key', sa.String(length=255), nullable=False),
    sa.Column('count', sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(['vendor_id'], ['vendors.id'], name=op.f('fk_event_counts_vendor_id_vendors')),
    sa.PrimaryKeyConstraint('kind', 'day', 'vendor_id', 'key', name=op.f('pk_event_counts')),
    sqlite_with_rowid=False
    )


def downgrade() -> None:
    op.drop_table('event_counts')
    op.drop_table('stats_progress')
