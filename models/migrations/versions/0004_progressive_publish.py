"""progressive publish: media playable_at and fast_path verdict

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 10:00:00.000000
"""
from typing import Sequence, Union

import sqlalchemy as sa
import sqlmodel
from alembic import op


revision: str = '0004'
down_revision: Union[str, Sequence[str], None] = '0003'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    # A database adopted from create_all (see models/db.py) may already have the columns.
    have = {c['name'] for c in sa.inspect(op.get_bind()).get_columns('media')}
    with op.batch_alter_table('media', schema=None) as batch_op:
        if 'playable_at' not in have:
            batch_op.add_column(sa.Column('playable_at', sa.DateTime(timezone=True),
                                          nullable=True))
        if 'fast_path_json' not in have:
            batch_op.add_column(sa.Column('fast_path_json', sqlmodel.sql.sqltypes.AutoString(),
                                          nullable=False, server_default='{}'))


def downgrade() -> None:
    with op.batch_alter_table('media', schema=None) as batch_op:
        batch_op.drop_column('fast_path_json')
        batch_op.drop_column('playable_at')
