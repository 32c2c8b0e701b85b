"""The fast lane leaves out exactly the tests that start another process (tests/lanes.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from lanes import starters

HERE = Path(__file__).parent


def test_a_test_that_runs_the_console_script_is_in_the_subprocess_lane() -> None:
    names = starters(HERE / "test_run_end_to_end.py")
    assert "test_status_and_export_report_the_final_outcome_of_every_input_id" in names


def test_a_helper_imported_from_another_file_puts_its_caller_in_the_subprocess_lane() -> None:
    """kill_then_resume (helpers.py) runs tests/faults.py: its callers start processes."""
    assert "kill_then_resume" in starters(HERE / "helpers.py")
    names = starters(HERE / "test_batch_objectstore.py")
    assert "test_a_batch_run_on_s3_resumes_after_kill_9_and_submits_each_row_once" in names


def test_in_process_tests_stay_in_the_fast_lane() -> None:
    names = starters(HERE / "test_layers.py")
    assert not {name for name in names if name.startswith("test_")}
    api = starters(HERE / "test_api.py")
    assert "test_run_from_a_script_answers_every_row_with_its_own_answer" not in api


def test_this_file_is_in_the_fast_lane(request: pytest.FixtureRequest) -> None:
    assert request.node.get_closest_marker("subprocess") is None
