"""Fingerprint indexes in signature versions, their bytes stored once in chunks; what each agent runs.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 06:40:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('signature_blobs',
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('size', sa.BigInteger(), nullable=False),
    sa.Column('chunks', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('sha256', name=op.f('pk_signature_blobs'))
    )
    op.create_table('signature_blob_chunks',
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('seq', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('data', sa.LargeBinary(), nullable=False),
    sa.ForeignKeyConstraint(['sha256'], ['signature_blobs.sha256'], name=op.f('fk_signature_blob_chunks_sha256_signature_blobs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('sha256', 'seq', name=op.f('pk_signature_blob_chunks'))
    )
    op.create_table('signature_indexes',
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('size', sa.BigInteger(), nullable=False),
    sa.Column('vendors', sa.JSON(), nullable=True),
    sa.Column('info', sa.JSON(), nullable=False),
    sa.ForeignKeyConstraint(['sha256'], ['signature_blobs.sha256'], name=op.f('fk_signature_indexes_sha256_signature_blobs')),
    sa.ForeignKeyConstraint(['version'], ['signature_versions.version'], name=op.f('fk_signature_indexes_version_signature_versions'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('version', 'name', name=op.f('pk_signature_indexes'))
    )
    with op.batch_alter_table('agents', schema=None) as batch_op:
        batch_op.add_column(sa.Column('fingerprints', sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('agents', schema=None) as batch_op:
        batch_op.drop_column('fingerprints')
    op.drop_table('signature_indexes')
    op.drop_table('signature_blob_chunks')
    op.drop_table('signature_blobs')
