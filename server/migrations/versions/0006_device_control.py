"""USB device control per vendor (policies, time-limited exceptions) and quarantined files with their agents' commands.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 12:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('device_exceptions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('vendor', sa.Integer(), nullable=False),
    sa.Column('vendor_id', sa.String(length=16), nullable=False),
    sa.Column('product_id', sa.String(length=16), nullable=False),
    sa.Column('serial', sa.String(length=128), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('granted_by', sa.String(length=128), nullable=False),
    sa.Column('granted_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['vendor'], ['vendors.id'], name=op.f('fk_device_exceptions_vendor_vendors')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_device_exceptions'))
    )
    op.create_index('ix_device_exceptions_vendor_expires_at', 'device_exceptions', ['vendor', 'expires_at'], unique=False)
    op.create_table('device_policies',
    sa.Column('vendor', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('action', sa.String(length=16), nullable=False),
    sa.Column('allowed', sa.JSON(), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_by', sa.String(length=128), nullable=False),
    sa.ForeignKeyConstraint(['vendor'], ['vendors.id'], name=op.f('fk_device_policies_vendor_vendors')),
    sa.PrimaryKeyConstraint('vendor', name=op.f('pk_device_policies'))
    )
    op.create_table('agent_commands',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('agent_id', sa.String(length=32), nullable=False),
    sa.Column('op', sa.String(length=16), nullable=False),
    sa.Column('quarantine_id', sa.String(length=36), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('done_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['agent_id'], ['agents.id'], name=op.f('fk_agent_commands_agent_id_agents')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_agent_commands'))
    )
    op.create_index('ix_agent_commands_agent_id_done_at', 'agent_commands', ['agent_id', 'done_at'], unique=False)
    op.create_table('quarantine_items',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('quarantine_id', sa.String(length=36), nullable=False),
    sa.Column('agent_id', sa.String(length=32), nullable=False),
    sa.Column('vendor', sa.Integer(), nullable=False),
    sa.Column('event_id', sa.String(length=36), nullable=False),
    sa.Column('original_path', sa.Text(), nullable=False),
    sa.Column('size', sa.BigInteger(), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('ephemeral_key', sa.String(length=64), nullable=False),
    sa.Column('state', sa.String(length=24), nullable=False),
    sa.Column('detail', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['agent_id'], ['agents.id'], name=op.f('fk_quarantine_items_agent_id_agents')),
    sa.ForeignKeyConstraint(['vendor'], ['vendors.id'], name=op.f('fk_quarantine_items_vendor_vendors')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_quarantine_items')),
    sa.UniqueConstraint('quarantine_id', name=op.f('uq_quarantine_items_quarantine_id'))
    )
    op.create_index(op.f('ix_quarantine_items_agent_id'), 'quarantine_items', ['agent_id'], unique=False)
    op.create_index('ix_quarantine_items_vendor_state', 'quarantine_items', ['vendor', 'state'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_quarantine_items_vendor_state', table_name='quarantine_items')
    op.drop_index(op.f('ix_quarantine_items_agent_id'), table_name='quarantine_items')
    op.drop_table('quarantine_items')
    op.drop_index('ix_agent_commands_agent_id_done_at', table_name='agent_commands')
    op.drop_table('agent_commands')
    op.drop_table('device_policies')
    op.drop_index('ix_device_exceptions_vendor_expires_at', table_name='device_exceptions')
    op.drop_table('device_exceptions')
