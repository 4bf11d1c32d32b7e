"""The parsed form every traffic reader returns, and the CSV reading they share (pyarrow).

A reader turns the published files of one dataset into a :class:`RawTraffic`: numeric feature columns
(float64, non-finite values kept as they are), categorical columns (strings), the attack family of every
row (``"benign"`` for normal traffic), optionally the device each row was captured on, and, for datasets
published as a train/test pair, which rows are test rows. :mod:`.preprocess` turns it into tensors.

:func:`read_csv_strings` reads a CSV with every column as a string (so mixed-type columns and repeated
header rows inside a file never stop the parser), checks the header against the published schema and
raises :class:`~fedshield.core.errors.DataFileError` naming the file and the column (or the line) on a wrong
or truncated file. :func:`to_float` then converts a column, naming the file, column and first bad value.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from ...core.errors import DataFileError

__all__ = ["RawTraffic", "BENIGN", "read_csv_strings", "to_float", "to_str", "to_labels", "concat_raw", "dedupe_names", "family_key",
           "checked_families"]

BENIGN = "benign"


@dataclass(eq=False)
class RawTraffic:
    """One dataset as parsed from its files, before any preprocessing (one row per flow or packet window)."""

    name: str
    numeric: np.ndarray  # (N, F) float64, may hold NaN / ±inf
    numeric_names: tuple[str, ...]
    categorical: dict[str, np.ndarray] = field(default_factory=dict)  # name -> (N,) str
    family: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=object))  # (N,) attack family, "benign"
    device: Optional[np.ndarray] = None  # (N,) int64 device id, when the dataset records one
    device_names: tuple[str, ...] = ()
    is_test: Optional[np.ndarray] = None  # (N,) bool for datasets published as a train/test pair
    order: Optional[np.ndarray] = None  # (N,) sort key of consecutive flows (capture order), when known
    files: tuple[Path, ...] = ()
    port_columns: tuple[str, ...] = ()  # numeric columns that are port numbers (dropped with drop_ports)

    def __post_init__(self) -> None:
        if self.is_test is not None:
            self.is_test = np.asarray(self.is_test, dtype=bool)
        n = self.numeric.shape[0]
        if self.numeric.ndim != 2 or self.numeric.shape[1] != len(self.numeric_names):
            raise ValueError(f"{self.name}: numeric is {self.numeric.shape}, names {len(self.numeric_names)}")
        for key, arr in (("family", self.family), ("device", self.device), ("is_test", self.is_test)):
            if arr is not None and len(arr) != n:
                raise ValueError(f"{self.name}: {key} has {len(arr)} rows, numeric has {n}")
        for key, arr in self.categorical.items():
            if len(arr) != n:
                raise ValueError(f"{self.name}: categorical column {key!r} has {len(arr)} rows, numeric has {n}")

    def __len__(self) -> int:
        return int(self.numeric.shape[0])


def dedupe_names(names: Sequence[str]) -> list[str]:
    """Column names with repeats made unique the way pandas does: the second ``x`` becomes ``x.1``."""
    seen: dict[str, int] = {}
    out = []
    for n in names:
        if n in seen:
            seen[n] += 1
            out.append(f"{n}.{seen[n]}")
        else:
            seen[n] = 0
            out.append(n)
    return out


def _header(path: Path, encoding: str = "utf8") -> list[str]:
    """The header line's column names; a UTF-8 byte-order mark (spreadsheet exports) is not part of the first."""
    try:
        with open(path, "rb") as f:
            raw = f.readline()
    except OSError as exc:
        raise DataFileError(f"{path}: cannot read ({exc})") from None
    line = raw.removeprefix(b"\xef\xbb\xbf").decode(encoding, errors="replace")
    if not line.strip():
        raise DataFileError(f"{path}: the file is empty (no header line)")
    return [c for c in line.rstrip("\r\n").split(",")]


def read_csv_strings(
    path: Path,
    expected: Sequence[str],
    *,
    strip_names: bool = False,
    header: bool = True,
    encoding: str = "utf8",
) -> dict[str, pa.Array]:
    """Every column of ``path`` as strings, keyed by its (deduplicated) name, checked against ``expected``.

    ``header=False``: the file has no header line and ``expected`` names its columns. ``strip_names``
    compares names with surrounding spaces removed (CIC-IDS2017 writes ``" Label"``); the returned keys are
    then the stripped names. Rows that repeat the header (CIC-IDS2017 files concatenated with their headers)
    are dropped. A missing or unexpected column, a row with the wrong number of fields (a truncated file) or an
    empty file raises :class:`DataFileError` naming the file and the column or line. ``encoding``: the
    files' text encoding (pyarrow transcodes anything but UTF-8).
    """
    path = Path(path)
    expected_names = dedupe_names([c.strip() if strip_names else c for c in expected])
    if header:
        found = dedupe_names([c.strip() if strip_names else c for c in _header(path, encoding)])
        missing = [c for c in expected_names if c not in found]
        extra = [c for c in found if c not in expected_names]
        if missing or extra:
            parts = []
            if missing:
                parts.append(f"missing column(s) {missing[:5]}")
            if extra:
                parts.append(f"unexpected column(s) {extra[:5]}")
            raise DataFileError(
                f"{path}: header does not match the published schema: {'; '.join(parts)} "
                f"(expected {len(expected_names)} columns, found {len(found)})"
            )
        names = found
    else:
        names = expected_names
    read_opts = pacsv.ReadOptions(
        column_names=names, skip_rows=1 if header else 0, block_size=1 << 24, encoding=encoding
    )
    convert = pacsv.ConvertOptions(column_types={n: pa.string() for n in names}, strings_can_be_null=False)
    try:
        table = pacsv.read_csv(path, read_options=read_opts, convert_options=convert)
    except pa.ArrowInvalid as exc:
        msg = str(exc)
        raise DataFileError(
            f"{path}: not a complete {len(names)}-column CSV (truncated or wrong file?): {msg.splitlines()[0]}"
        ) from None
    if table.num_rows == 0:
        raise DataFileError(f"{path}: no data rows after the header")
    cols = {n: table.column(n).combine_chunks() for n in names}
    # repeated header rows: the first column holds its own name
    first = names[0]
    raw_first = expected[0] if not header else _header(path, encoding)[0]
    repeat = pc.equal(pc.utf8_trim_whitespace(cols[first]), raw_first.strip())
    if pc.any(repeat).as_py():
        keep = pc.invert(repeat)
        cols = {n: pc.filter(c, keep) for n, c in cols.items()}
    return cols


def to_float(path: Path, column: str, values: pa.Array, missing: Sequence[str] = ("",)) -> np.ndarray:
    """float64 values of a string column. ``Infinity``/``inf``/``NaN`` parse to ±inf/NaN; the strings in
    ``missing`` (default: the empty string) become NaN. Anything else that is not a number raises
    :class:`DataFileError` naming the file, the column and the first bad value."""
    trimmed = pc.utf8_trim_whitespace(values)
    is_missing = pc.is_in(trimmed, value_set=pa.array(list(missing), pa.string()))
    cleaned = pc.if_else(is_missing, pa.scalar("NaN"), trimmed)
    try:
        out = pc.cast(cleaned, pa.float64())
    except pa.ArrowInvalid:
        bad_value, bad_row = None, None
        for i, v in enumerate(cleaned.to_pylist()):
            try:
                float(v)
            except (TypeError, ValueError):
                bad_value, bad_row = v, i
                break
        raise DataFileError(
            f"{path}: column {column!r} holds a non-numeric value {bad_value!r} (data row {bad_row}); "
            "a wrong or damaged file?"
        ) from None
    return out.to_numpy(zero_copy_only=False).astype(np.float64, copy=False)


def to_str(values: pa.Array) -> np.ndarray:
    """Trimmed strings as a numpy object array."""
    return np.asarray(pc.utf8_trim_whitespace(values).to_pylist(), dtype=object)


def to_labels(path: Path, column: str, values: pa.Array) -> np.ndarray:
    """Trimmed label strings (:func:`to_str`); an empty label raises :class:`DataFileError` naming the file, the
    column and the first such row (it would otherwise become an attack family called ``unknown``)."""
    out = to_str(values)
    empty = np.flatnonzero(out == "")
    if len(empty):
        raise DataFileError(
            f"{path}: column {column!r} is empty in {len(empty)} data row(s) (first: data row {int(empty[0])}); "
            "every row needs its label"
        )
    return out


def concat_raw(parts: Sequence[RawTraffic], name: str) -> RawTraffic:
    """Rows of several :class:`RawTraffic` with the same columns, one after the other."""
    if not parts:
        raise ValueError(f"{name}: nothing to concatenate")
    first = parts[0]
    for p in parts[1:]:
        if p.numeric_names != first.numeric_names or set(p.categorical) != set(first.categorical):
            raise ValueError(f"{name}: files with different columns cannot be combined")

    def cat(get):
        vals = [get(p) for p in parts]
        return None if any(v is None for v in vals) else np.concatenate(vals)

    return RawTraffic(
        name=name,
        numeric=np.concatenate([p.numeric for p in parts]),
        numeric_names=first.numeric_names,
        categorical={k: np.concatenate([p.categorical[k] for p in parts]) for k in first.categorical},
        family=np.concatenate([p.family for p in parts]),
        device=cat(lambda p: p.device),
        device_names=first.device_names,
        is_test=cat(lambda p: p.is_test),
        order=cat(lambda p: p.order),
        files=tuple(f for p in parts for f in p.files),
        port_columns=first.port_columns,
    )


def family_key(label: str) -> str:
    """A label as a family name: lower case, runs of other characters as one ``_`` (``"DoS Hulk"`` → ``dos_hulk``,
    ``"Web Attack \\x96 Brute Force"`` → ``web_attack_brute_force``)."""
    out, gap = [], False
    for ch in label.strip().lower():
        if ch.isascii() and ch.isalnum():
            if gap and out:
                out.append("_")
            out.append(ch)
            gap = False
        else:
            gap = True
    return "".join(out) or "unknown"


def checked_families(path: Path, cols: dict[str, pa.Array], family_column: str, normal: str = "normal") -> np.ndarray:
    """The family of every row from ``family_column`` (``normal`` → :data:`BENIGN`, others :func:`family_key`),
    checked against the 0/1 ``label`` column: :class:`DataFileError` naming the file and the columns when a
    label is not 0 or 1, or when a row's label and family disagree (UNSW-NB15 and ToN-IoT carry both)."""
    label = to_float(path, "label", cols["label"])
    if not np.isin(label, (0.0, 1.0)).all():
        raise DataFileError(f"{path}: column 'label' must hold 0 or 1")
    kinds = np.array([family_key(v) for v in to_labels(path, family_column, cols[family_column])], dtype=object)
    family = np.where(kinds == normal, BENIGN, kinds)
    bad = int(((family == BENIGN) != (label == 0)).sum())
    if bad:
        raise DataFileError(f"{path}: {bad} rows where column 'label' disagrees with column {family_column!r}")
    return family
