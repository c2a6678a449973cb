"""The data-moving migrations again, on PostgreSQL (its sequences must follow the copied ids)."""

from __future__ import annotations

import pytest

from tests.service.test_migrations import (  # noqa: F401  (collected here too)
    test_the_audit_trail_moves_to_core_with_every_row,
)

pytestmark = [pytest.mark.scale, pytest.mark.django_db(transaction=True)]
