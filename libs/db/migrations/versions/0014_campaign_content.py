"""campaigns of any media kind: the kind's content beside the text body

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07

A campaign sends text, a template, or (now) an image, video, audio, document or sticker: ``content_type`` names
the kind and ``content`` holds its media reference (``{"link"|"id", "filename"?}``); ``body`` stays the text,
here the caption with ``{var}`` placeholders. Nullable, no default: adding it rewrites nothing.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0014'
down_revision = '0013'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('campaigns', sa.Column('content', postgresql.JSONB(), nullable=True))


def downgrade() -> None:
    op.drop_column('campaigns', 'content')
