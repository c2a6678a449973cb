"""core.statements's tests again, on PostgreSQL (RETURNING, psycopg's adapters, jsonb)."""

from __future__ import annotations

import pytest

from tests.service.test_statements import (  # noqa: F401  (collected here too)
    test_errors_are_djangos_and_atomic_blocks_hold,
    test_execute_all_runs_a_batch_in_order_and_an_error_undoes_it,
    test_execute_takes_djangos_placeholders_and_raises_djangos_errors,
    test_insert_if_new_leaves_an_existing_row_alone,
    test_insert_reads_back_through_the_orm_equal,
    test_insert_row_fills_defaults_and_auto_now_like_the_orm,
    test_select_builds_the_same_instances_as_the_orm,
    test_update_changes_the_row_and_the_instance,
    test_write_together_groups_jobs_of_threads_each_all_or_nothing,
)

pytestmark = [pytest.mark.scale, pytest.mark.django_db(transaction=True)]
