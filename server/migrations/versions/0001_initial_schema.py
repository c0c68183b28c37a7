"""Initial schema: vendors, users, tokens, agents, events, addresses, audit log, alert outbox.

Revision ID: 0001
Revises:
Create Date: 2026-11-24 02:32:56.948190
"""

import sqlalchemy as sa
from alembic import op

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('audit_head',
    sa.Column('id', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('seq', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('hash', sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_head'))
    )
    op.create_table('audit_log',
    sa.Column('seq', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=False, nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('actor', sa.String(length=128), nullable=False),
    sa.Column('action', sa.String(length=64), nullable=False),
    sa.Column('target', sa.String(length=255), nullable=False),
    sa.Column('details', sa.Text(), nullable=False),
    sa.Column('address', sa.String(length=45), nullable=True),
    sa.Column('prev_hash', sa.String(length=64), nullable=False),
    sa.Column('hash', sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint('seq', name=op.f('pk_audit_log'))
    )
    op.create_table('login_attempts',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('user_name', sa.String(length=128), nullable=False),
    sa.Column('address', sa.String(length=45), nullable=True),
    sa.Column('success', sa.Boolean(), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_login_attempts'))
    )
    with op.batch_alter_table('login_attempts', schema=None) as batch_op:
        batch_op.create_index('ix_login_attempts_address_at', ['address', 'at'], unique=False)
        batch_op.create_index('ix_login_attempts_user_name_at', ['user_name', 'at'], unique=False)

    op.create_table('users',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('role', sa.String(length=16), nullable=False),
    sa.Column('password_hash', sa.String(length=255), nullable=False),
    sa.Column('disabled', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_users')),
    sa.UniqueConstraint('name', name=op.f('uq_users_name'))
    )
    op.create_table('vendors',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('allowed_cidrs', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_vendors')),
    sa.UniqueConstraint('name', name=op.f('uq_vendors_name'))
    )
    op.create_table('agents',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('vendor_id', sa.Integer(), nullable=False),
    sa.Column('secret_hash', sa.String(length=64), nullable=False),
    sa.Column('hostname', sa.String(length=255), nullable=False),
    sa.Column('os', sa.String(length=64), nullable=False),
    sa.Column('machine_id', sa.String(length=128), nullable=False),
    sa.Column('agent_version', sa.String(length=64), nullable=False),
    sa.Column('ruleset_version', sa.String(length=64), nullable=True),
    sa.Column('ruleset_error', sa.Text(), nullable=True),
    sa.Column('spool_depth', sa.BigInteger(), nullable=False),
    sa.Column('dropped', sa.BigInteger(), nullable=False),
    sa.Column('sources', sa.JSON(), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('enrolled_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_seen_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_heartbeat_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_ip', sa.String(length=45), nullable=True),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['vendor_id'], ['vendors.id'], name=op.f('fk_agents_vendor_id_vendors')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_agents'))
    )
    with op.batch_alter_table('agents', schema=None) as batch_op:
        batch_op.create_index('ix_agents_status_last_seen_at', ['status', 'last_seen_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_agents_vendor_id'), ['vendor_id'], unique=False)

    op.create_table('api_tokens',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('secret_hash', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_used_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('revoked', sa.Boolean(), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_api_tokens_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_api_tokens'))
    )
    with op.batch_alter_table('api_tokens', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_api_tokens_user_id'), ['user_id'], unique=False)

    op.create_table('enrollment_tokens',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('vendor_id', sa.Integer(), nullable=False),
    sa.Column('secret_hash', sa.String(length=64), nullable=False),
    sa.Column('max_uses', sa.Integer(), nullable=False),
    sa.Column('uses', sa.Integer(), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('created_by', sa.String(length=128), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('revoked', sa.Boolean(), nullable=False),
    sa.ForeignKeyConstraint(['vendor_id'], ['vendors.id'], name=op.f('fk_enrollment_tokens_vendor_id_vendors')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_enrollment_tokens'))
    )
    op.create_table('user_addresses',
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('address', sa.String(length=45), nullable=False),
    sa.Column('country', sa.String(length=2), nullable=True),
    sa.Column('first_seen_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_seen_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('count', sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_user_addresses_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('user_id', 'address', name=op.f('pk_user_addresses'))
    )
    with op.batch_alter_table('user_addresses', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_user_addresses_last_seen_at'), ['last_seen_at'], unique=False)

    op.create_table('agent_addresses',
    sa.Column('agent_id', sa.String(length=32), nullable=False),
    sa.Column('address', sa.String(length=45), nullable=False),
    sa.Column('country', sa.String(length=2), nullable=True),
    sa.Column('expected', sa.Boolean(), nullable=True),
    sa.Column('first_seen_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_seen_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('count', sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(['agent_id'], ['agents.id'], name=op.f('fk_agent_addresses_agent_id_agents'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('agent_id', 'address', name=op.f('pk_agent_addresses'))
    )
    with op.batch_alter_table('agent_addresses', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_agent_addresses_last_seen_at'), ['last_seen_at'], unique=False)

    op.create_table('events',
    sa.Column('seq', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('agent_id', sa.String(length=32), nullable=False),
    sa.Column('vendor_id', sa.Integer(), nullable=False),
    sa.Column('channel', sa.String(length=16), nullable=False),
    sa.Column('type', sa.String(length=64), nullable=False),
    sa.Column('occurred_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('severity', sa.String(length=16), nullable=True),
    sa.Column('severity_rank', sa.SmallInteger(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=True),
    sa.Column('host', sa.String(length=255), nullable=True),
    sa.Column('user_name', sa.String(length=255), nullable=True),
    sa.Column('path', sa.Text(), nullable=True),
    sa.Column('sha256', sa.String(length=64), nullable=True),
    sa.Column('device_serial', sa.String(length=255), nullable=True),
    sa.Column('body', sa.Text(), nullable=False),
    sa.Column('source_ip', sa.String(length=45), nullable=True),
    sa.Column('source_country', sa.String(length=2), nullable=True),
    sa.Column('triage_status', sa.String(length=16), nullable=False),
    sa.Column('assignee_id', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['agent_id'], ['agents.id'], name=op.f('fk_events_agent_id_agents')),
    sa.ForeignKeyConstraint(['assignee_id'], ['users.id'], name=op.f('fk_events_assignee_id_users')),
    sa.ForeignKeyConstraint(['vendor_id'], ['vendors.id'], name=op.f('fk_events_vendor_id_vendors')),
    sa.PrimaryKeyConstraint('seq', name=op.f('pk_events')),
    sa.UniqueConstraint('id', name=op.f('uq_events_id'))
    )
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.create_index('ix_events_agent_id_seq', ['agent_id', 'seq'], unique=False)
        batch_op.create_index('ix_events_channel_seq', ['channel', 'seq'], unique=False)
        batch_op.create_index('ix_events_device_serial', ['device_serial'], unique=False)
        batch_op.create_index('ix_events_occurred_at', ['occurred_at'], unique=False)
        batch_op.create_index('ix_events_severity_rank_seq', ['severity_rank', 'seq'], unique=False)
        batch_op.create_index('ix_events_sha256', ['sha256'], unique=False)
        batch_op.create_index('ix_events_triage_status_seq', ['triage_status', 'seq'], unique=False)
        batch_op.create_index('ix_events_user_name_seq', ['user_name', 'seq'], unique=False)
        batch_op.create_index('ix_events_vendor_id_seq', ['vendor_id', 'seq'], unique=False)

    op.create_table('alert_outbox',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('event_seq', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('target', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('lease_until', sa.DateTime(timezone=True), nullable=True),
    sa.Column('delivered_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('failed', sa.Boolean(), nullable=False),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['event_seq'], ['events.seq'], name=op.f('fk_alert_outbox_event_seq_events'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_alert_outbox'))
    )
    with op.batch_alter_table('alert_outbox', schema=None) as batch_op:
        batch_op.create_index('ix_alert_outbox_delivered_at_next_attempt_at', ['delivered_at', 'next_attempt_at'], unique=False)

    op.create_table('event_comments',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('event_seq', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('body', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['event_seq'], ['events.seq'], name=op.f('fk_event_comments_event_seq_events'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_event_comments_user_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_event_comments'))
    )
    with op.batch_alter_table('event_comments', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_event_comments_event_seq'), ['event_seq'], unique=False)

    op.create_table('event_rules',
    sa.Column('event_seq', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('rule', sa.String(length=255), nullable=False),
    sa.ForeignKeyConstraint(['event_seq'], ['events.seq'], name=op.f('fk_event_rules_event_seq_events'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('event_seq', 'rule', name=op.f('pk_event_rules'))
    )
    with op.batch_alter_table('event_rules', schema=None) as batch_op:
        batch_op.create_index('ix_event_rules_rule_event_seq', ['rule', 'event_seq'], unique=False)



    op.bulk_insert(
        sa.table('audit_head', sa.column('id', sa.Integer), sa.column('seq', sa.Integer), sa.column('hash', sa.String)),
        [{'id': 1, 'seq': 0, 'hash': '0' * 64}],
    )


def downgrade() -> None:
    with op.batch_alter_table('event_rules', schema=None) as batch_op:
        batch_op.drop_index('ix_event_rules_rule_event_seq')

    op.drop_table('event_rules')
    with op.batch_alter_table('event_comments', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_event_comments_event_seq'))

    op.drop_table('event_comments')
    with op.batch_alter_table('alert_outbox', schema=None) as batch_op:
        batch_op.drop_index('ix_alert_outbox_delivered_at_next_attempt_at')

    op.drop_table('alert_outbox')
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.drop_index('ix_events_vendor_id_seq')
        batch_op.drop_index('ix_events_user_name_seq')
        batch_op.drop_index('ix_events_triage_status_seq')
        batch_op.drop_index('ix_events_sha256')
        batch_op.drop_index('ix_events_severity_rank_seq')
        batch_op.drop_index('ix_events_occurred_at')
        batch_op.drop_index('ix_events_device_serial')
        batch_op.drop_index('ix_events_channel_seq')
        batch_op.drop_index('ix_events_agent_id_seq')

    op.drop_table('events')
    with op.batch_alter_table('agent_addresses', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_agent_addresses_last_seen_at'))

    op.drop_table('agent_addresses')
    with op.batch_alter_table('user_addresses', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_user_addresses_last_seen_at'))

    op.drop_table('user_addresses')
    op.drop_table('enrollment_tokens')
    with op.batch_alter_table('api_tokens', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_api_tokens_user_id'))

    op.drop_table('api_tokens')
    with op.batch_alter_table('agents', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_agents_vendor_id'))
        batch_op.drop_index('ix_agents_status_last_seen_at')

    op.drop_table('agents')
    op.drop_table('vendors')
    op.drop_table('users')
    with op.batch_alter_table('login_attempts', schema=None) as batch_op:
        batch_op.drop_index('ix_login_attempts_user_name_at')
        batch_op.drop_index('ix_login_attempts_address_at')

    op.drop_table('login_attempts')
    op.drop_table('audit_log')
    op.drop_table('audit_head')
