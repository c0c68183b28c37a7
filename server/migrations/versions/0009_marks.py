"""Marks: watermarks and canaries minted for a vendor's seat, stored by their payload's keyed digest.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02 22:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "marks",
        sa.Column("id", sa.String(length=19), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("canary_kind", sa.String(length=16), nullable=True),
        sa.Column("vendor_id", sa.Integer(), nullable=False),
        sa.Column("seat", sa.String(length=255), nullable=True),
        sa.Column("subject", sa.JSON(), nullable=False),
        sa.Column("marked_sha256", sa.String(length=64), nullable=True),
        sa.Column("rule_sha256", sa.String(length=64), nullable=True),
        sa.Column("created_by", sa.String(length=128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["vendor_id"], ["vendors.id"], name=op.f("fk_marks_vendor_id_vendors")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_marks")),
        sa.UniqueConstraint("digest", name=op.f("uq_marks_digest")),
    )
    with op.batch_alter_table("marks", schema=None) as batch_op:
        batch_op.create_index("ix_marks_marked_sha256", ["marked_sha256"], unique=False)
        batch_op.create_index("ix_marks_vendor_id_created_at", ["vendor_id", "created_at"], unique=False)


def downgrade() -> None:
    op.drop_table("marks")
