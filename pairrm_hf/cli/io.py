"""Reading and writing row tables for the ``pairrm`` command: JSONL, JSON, CSV, Parquet and ``datasets``.

Readers return a :class:`Table`: the rows as dicts (input order), a location per row (``line 3`` for line-based
files, ``row 2`` otherwise) used in error messages, and the rows that could not even be parsed (malformed JSON,
bytes that are not UTF-8) as :class:`RowProblem` records. Writers pick the format from the output's extension and
replace the output atomically (temporary file in the same folder + ``os.replace``).
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "FORMATS", "InputError", "RowProblem", "Table", "detect_format", "read_table", "write_rows",
    "atomic_write_text", "input_fingerprint",
]  # fmt: skip

#: File formats by extension; anything else that is a folder is read with ``datasets.load_from_disk``.
FORMATS = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
}


class InputError(ValueError):
    """Bad input data or arguments; the ``pairrm`` command exits with status 2."""


@dataclass
class RowProblem:
    """A row that cannot be used: its index in the input (or -1 when it never became a row), where it is, why."""

    index: int
    location: str
    reason: str
    raw: Any = None


@dataclass
class Table:
    """Rows of one input in order, with a human location per row and the rows that failed to parse."""

    name: str
    rows: list[dict]
    locations: list[str]
    problems: list[RowProblem] = field(default_factory=list)


def detect_format(path: str | os.PathLike) -> str:
    """``jsonl``/``json``/``csv``/``parquet`` from the extension, ``dataset`` for a folder or a Hub dataset id."""
    path = os.fspath(path)
    ext = os.path.splitext(path)[1].lower()
    if ext in FORMATS:
        return FORMATS[ext]
    if os.path.isdir(path) or not os.path.exists(path):
        return "dataset"
    raise InputError(f"{path}: unknown file type {ext!r}; use one of {sorted(FORMATS)} or a datasets folder")


def _decode_lines(path: str) -> Iterable[tuple[int, str | None, str | None]]:
    """``(line number, text, error)`` per non-blank line; a line that is not UTF-8 gives an error, not a crash."""
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                yield number, None, f"not valid UTF-8 (byte {err.start}: {raw[err.start : err.start + 1]!r})"
                continue
            if text.strip():
                yield number, text, None


def _read_jsonl(path: str, limit: int | None) -> Table:
    table = Table(path, [], [])
    for number, text, error in _decode_lines(path):
        if limit is not None and len(table.rows) >= limit:
            break
        index = len(table.rows)
        if error is None:
            try:
                row = json.loads(text)
            except json.JSONDecodeError as err:
                error = f"malformed JSON ({err.msg} at column {err.colno})"
            else:
                if not isinstance(row, dict):
                    error = f"expected a JSON object, got {type(row).__name__}"
        if error is not None:
            # Keep the slot so row indices (and chunk boundaries) do not depend on which rows are bad.
            table.problems.append(RowProblem(index, f"line {number}", error, text))
            table.rows.append({})
            table.locations.append(f"line {number}")
            continue
        table.rows.append(row)
        table.locations.append(f"line {number}")
    return table


def _read_text(path: str) -> str:
    data = open(path, "rb").read()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise InputError(f"{path}: line {line}: not valid UTF-8 (byte {err.start})") from None


def _read_json(path: str, limit: int | None) -> Table:
    try:
        data = json.loads(_read_text(path))
    except json.JSONDecodeError as err:
        raise InputError(f"{path}: line {err.lineno}: malformed JSON ({err.msg} at column {err.colno})") from None
    if isinstance(data, dict) and all(isinstance(v, list) for v in data.values()) and data:
        # Column-oriented JSON ({"prompt": [...], "candidates": [...]}), as pandas/datasets may write it.
        n = len(next(iter(data.values())))
        data = [{k: v[i] if i < len(v) else None for k, v in data.items()} for i in range(n)]
    if not isinstance(data, list):
        raise InputError(f"{path}: expected a JSON list of objects, got {type(data).__name__}")
    data = data[:limit] if limit is not None else data
    table = Table(path, [], [])
    for i, row in enumerate(data):
        table.locations.append(f"row {i}")
        if not isinstance(row, dict):
            table.problems.append(RowProblem(i, f"row {i}", f"expected a JSON object, got {type(row).__name__}", row))
            row = {}
        table.rows.append(row)
    return table


def _read_csv(path: str, limit: int | None) -> Table:
    reader = csv.DictReader(io.StringIO(_read_text(path), newline=""))
    table = Table(path, [], [])
    for row in reader:
        if limit is not None and len(table.rows) >= limit:
            break
        table.rows.append(dict(row))
        table.locations.append(f"line {reader.line_num}")
    return table


def _records(dataset, name: str, limit: int | None) -> Table:
    if limit is not None:
        dataset = dataset.select(range(min(limit, len(dataset))))
    rows = dataset.to_list() if hasattr(dataset, "to_list") else dataset.to_pylist()
    return Table(name, rows, [f"row {i}" for i in range(len(rows))])


def read_table(path: str | os.PathLike, *, split: str | None = None, limit: int | None = None) -> Table:
    """Read an input into a :class:`Table` (the first ``limit`` rows when given).

    ``path``: a ``.jsonl``/``.json``/``.csv``/``.parquet`` file, a folder saved with ``Dataset.save_to_disk``
    (a ``DatasetDict`` needs ``split``) or a Hub dataset id (needs ``split``; loaded with ``datasets.load_dataset``).
    """
    path = os.fspath(path)
    kind = detect_format(path)
    if kind in ("jsonl", "json", "csv", "parquet") and not os.path.isfile(path):
        raise InputError(f"{path}: no such file")
    if kind == "jsonl":
        return _read_jsonl(path, limit)
    if kind == "json":
        return _read_json(path, limit)
    if kind == "csv":
        return _read_csv(path, limit)
    if kind == "parquet":
        import pyarrow.parquet as pq

        try:
            return _records(pq.read_table(path), path, limit)
        except Exception as err:  # pyarrow raises several types for a broken file
            raise InputError(f"{path}: cannot read Parquet: {err}") from None
    import datasets

    if os.path.isdir(path):
        data = datasets.load_from_disk(path)
    else:
        if split is None:
            raise InputError(f"{path}: no such file; for a Hub dataset id pass --split")
        data = datasets.load_dataset(path, split=split)
    if isinstance(data, datasets.DatasetDict):
        if split is None or split not in data:
            raise InputError(f"{path}: a DatasetDict; pass --split (one of {sorted(data)})")
        data = data[split]
    return _records(data, path, limit)


def input_fingerprint(path: str | os.PathLike, split: str | None = None) -> dict:
    """What identifies an input for resuming: path, size and mtime of a file; the cache fingerprint of a dataset."""
    path = os.fspath(path)
    if os.path.isfile(path):
        st = os.stat(path)
        return {"path": os.path.abspath(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    if os.path.isdir(path):
        files = []
        for root, _, names in sorted(os.walk(path)):
            for n in sorted(names):
                st = os.stat(os.path.join(root, n))
                files.append([os.path.relpath(os.path.join(root, n), path), st.st_size, st.st_mtime_ns])
        return {"path": os.path.abspath(path), "split": split, "files": files}
    return {"dataset": path, "split": split}


def _tmp_path(path: str) -> str:
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    os.close(fd)
    return tmp


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see the old file or the whole new one, never a part."""
    path = os.fspath(path)
    tmp = _tmp_path(path)
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _csv_cell(value: Any) -> Any:
    # Lists and dicts (candidates, scores, messages) go into CSV cells as JSON, which the reader parses back.
    return json.dumps(value, ensure_ascii=False) if isinstance(value, (list, dict, tuple)) else value


def write_rows(path: str | os.PathLike, rows: list[dict]) -> None:
    """Write rows to ``path`` in the format of its extension, atomically. Column order: first row's, then new ones."""
    path = os.fspath(path)
    kind = FORMATS.get(os.path.splitext(path)[1].lower())
    if kind is None:
        raise InputError(f"{path}: unknown output type; use one of {sorted(FORMATS)}")
    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(row))
    if kind == "jsonl":
        atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    elif kind == "json":
        atomic_write_text(path, json.dumps(rows, ensure_ascii=False, indent=1) + "\n")
    elif kind == "csv":
        buf = io.StringIO(newline="")
        writer = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _csv_cell(v) for k, v in row.items()})
        atomic_write_text(path, buf.getvalue())
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pylist([{c: r.get(c) for c in columns} for r in rows])
        tmp = _tmp_path(path)
        try:
            pq.write_table(table, tmp)
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.remove(tmp)
            raise
