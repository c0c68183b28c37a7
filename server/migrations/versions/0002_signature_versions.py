"""Signature versions and packs; the bundle version each agent runs.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24 03:09:01.773176
"""

import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('signature_versions',
    sa.Column('version', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('created_by', sa.String(length=128), nullable=False),
    sa.Column('note', sa.Text(), nullable=False),
    sa.Column('rollback_of', sa.Integer(), nullable=True),
    sa.PrimaryKeyConstraint('version', name=op.f('pk_signature_versions'))
    )
    op.create_table('signature_packs',
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('body', sa.Text(), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('vendors', sa.JSON(), nullable=True),
    sa.ForeignKeyConstraint(['version'], ['signature_versions.version'], name=op.f('fk_signature_packs_version_signature_versions'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('version', 'name', name=op.f('pk_signature_packs'))
    )
    with op.batch_alter_table('agents', schema=None) as batch_op:
        batch_op.add_column(sa.Column('bundle_version', sa.Integer(), nullable=True))



def downgrade() -> None:
    with op.batch_alter_table('agents', schema=None) as batch_op:
        batch_op.drop_column('bundle_version')

    op.drop_table('signature_packs')
    op.drop_table('signature_versions')
