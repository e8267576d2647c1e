"""The one CSV writer: text is neutralised by type, values Tollgate formats are not."""

import csv
import io
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from apps.core.csv_export import csv_chunks, spreadsheet_safe


def written(rows, **kwargs) -> list[list[str]]:
    text = "".join(csv_chunks(["a", "b"], rows, **kwargs))
    return list(csv.reader(io.StringIO(text, newline="")))[1:]


@pytest.mark.parametrize(
    "text", ["=1+1", "+1", "-1", "@SUM(A1)", "\t=1", "\r=1", "   =1", "\uff1d1+1"]
)
def test_text_a_spreadsheet_would_run_gets_a_leading_quote(text):
    assert spreadsheet_safe(text) == "'" + text


@pytest.mark.parametrize("text", ["gpt-4o-mini", "claude 3", "", "a=b", "1-2", "'quoted"])
def test_ordinary_text_is_unchanged(text):
    assert spreadsheet_safe(text) == text


def test_a_negative_number_tollgate_wrote_stays_a_number():
    assert written([(-3, Decimal("-1.5"))]) == [["-3", "-1.5"]]


def test_text_that_looks_like_a_negative_number_is_text():
    assert written([("-3", "x")]) == [["'-3", "x"]]


def test_render_formats_the_values_that_are_not_text():
    rows = written([(datetime(2026, 1, 2, tzinfo=UTC), None)], render=lambda v: f"<{v}>")
    assert rows == [["<2026-01-02 00:00:00+00:00>", "<None>"]]


def test_rows_come_in_chunks_of_the_given_size():
    chunks = list(csv_chunks(["a"], [(n,) for n in range(5)], rows_per_chunk=2))
    assert len(chunks) == 3


def test_a_carriage_return_in_text_never_splits_a_row():
    assert written([("a\rb", "c")]) == [["a\rb", "c"]]
