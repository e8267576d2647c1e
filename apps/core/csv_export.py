"""CSV exports that are safe to open in a spreadsheet.

Every CSV Tollgate writes goes through ``csv_chunks``: a text cell a client may have
chosen (a model name it sent, a key or tenant name, any future tag) would otherwise run
as a formula when an admin opens the file (OWASP "CSV injection"). The rule is by type,
not by look: a ``str`` cell is text and is neutralised by ``spreadsheet_safe``; numbers,
decimals, booleans and dates are values Tollgate formats itself and are written as
numbers, so a negative amount stays a number a spreadsheet can sum.
"""

import csv
import io
from collections.abc import Callable, Iterable, Iterator
from typing import Any

# What makes Excel, LibreOffice or Google Sheets read a cell as a formula (or DDE call):
# OWASP's list, plus the full-width forms some spreadsheets fold to ASCII.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "\n", "\uff1d", "\uff0b", "\uff0d", "\uff20")
ROWS_PER_CHUNK = 2000


def spreadsheet_safe(text: str) -> str:
    """``text`` with a leading ``'`` when a spreadsheet would run it as a formula: it starts
    with one of FORMULA_STARTS, also after leading spaces (LibreOffice trims them). The
    quote shows as text in the cell and keeps the original characters after it."""
    if text.lstrip(" ").startswith(FORMULA_STARTS):
        return "'" + text
    return text


def _plain(value: Any) -> Any:
    return "" if value is None else value


def csv_chunks(
    header: Iterable[str],
    rows: Iterable[Iterable[Any]],
    *,
    render: Callable[[Any], Any] = _plain,
    rows_per_chunk: int = ROWS_PER_CHUNK,
) -> Iterator[str]:
    """The CSV text of ``header`` and ``rows``, in chunks of ``rows_per_chunk`` rows (for a
    streamed response). Text cells are neutralised; any other value is passed to
    ``render`` (which formats Decimals, dates, None) and written as it returns it."""
    buffer = io.StringIO()
    # CRLF rows (RFC 4180): the writer then quotes any cell holding a lone "\r" too, which
    # with "\n" rows it leaves bare, so a spreadsheet would split the row there.
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow([spreadsheet_safe(str(name)) for name in header])
    for count, row in enumerate(rows, 1):
        writer.writerow([spreadsheet_safe(v) if isinstance(v, str) else render(v) for v in row])
        if count % rows_per_chunk == 0:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()
