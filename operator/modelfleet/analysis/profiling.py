"""`modelfleet profile`: the reference profile of a model's training data, for the dataDrift metric.

    modelfleet profile iris.csv --out profile.json
    modelfleet profile train.parquet --out profile.json --columns "sepal length (cm)=sepal_length,species"
    modelfleet profile X_train.npy --out profile.json \
        --columns sepal_length,sepal_width,petal_length,petal_width

This module reads the data: CSV or TSV (the header row names the features; a column whose cells are all
numbers, or empty, is numeric), Parquet (with pyarrow) and .npy / .npz (with numpy; the columns of a 2-D
array are f0, f1, ...). Neither library is needed for CSV: the operator image has neither. The profile
itself is `datadrift.build_profile`. The output is written whole or not at all (a temporary file renamed
into place), and an existing one only with --force.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import os
import sys
import tempfile
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

from modelfleet.analysis.datadrift import (
    DEFAULT_BINS,
    MAX_CATEGORIES,
    ProfileError,
    build_profile,
    render_profile,
)
from modelfleet.clihelp import DefaultsHelpFormatter

Columns = dict[str, list[Any]]

CSV_SUFFIXES = {".csv": ",", ".tsv": "\t"}
PARQUET_SUFFIXES = {".parquet", ".pq"}
NUMPY_SUFFIXES = {".npy", ".npz"}
NULL_CELLS = frozenset({"", "NA", "N/A", "NaN", "nan", "null", "NULL", "None"})
"""Cells that count as missing in a numeric CSV column (in a categorical one, only the empty cell)."""


class DataError(Exception):
    """The data cannot be read as columns; the message is one line for the user."""


# --- reading ------------------------------------------------------------------------------------------


def read_csv(path: Path, delimiter: str = ",") -> dict[str, list[str]]:
    """The cells of a CSV file by header name, as text."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as file:
            reader = csv.reader(file, delimiter=delimiter)
            header = next(reader, None)
            if header is None:
                raise DataError(f"{path}: empty file, no header row")
            names = [name.strip() for name in header]
            if "" in names:
                raise DataError(f"{path}: column {names.index('') + 1} of the header has no name")
            repeated = sorted({n for n in names if names.count(n) > 1})
            if repeated:
                raise DataError(f"{path}: the header names {', '.join(repeated)} more than once")
            cells: list[list[str]] = [[] for _ in names]
            for row in reader:
                if not row:
                    continue
                if len(row) != len(names):
                    raise DataError(
                        f"{path}:{reader.line_num}: {len(row)} fields, the header has {len(names)}"
                    )
                for column, cell in zip(cells, row, strict=True):
                    column.append(cell)
    except UnicodeDecodeError:
        raise DataError(f"{path}: not UTF-8 text") from None
    except csv.Error as error:
        raise DataError(f"{path}: not CSV: {error}") from None
    return dict(zip(names, cells, strict=True))


def typed_cells(cells: Sequence[str], categorical: bool) -> list[Any]:
    """A CSV column as numbers when every cell is a number or missing (and one is a number); else as text,
    the empty cell missing. A column named categorical stays text: `007` is not `7`."""
    if not categorical:
        numbers: list[float | None] = []
        for cell in cells:
            text = cell.strip()
            if text in NULL_CELLS:
                numbers.append(None)
                continue
            try:
                numbers.append(float(text))
            except ValueError:
                break
        else:
            if any(n is not None for n in numbers):
                return numbers
    return [cell if cell != "" else None for cell in cells]


def read_parquet(path: Path) -> Columns:
    """A Parquet file's columns, with pyarrow (nulls as None)."""
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise DataError(f"{path}: reading Parquet needs pyarrow: pip install pyarrow") from None
    try:
        table = pyarrow.parquet.read_table(path)
    except (OSError, ValueError, pyarrow.ArrowException) as error:
        raise DataError(f"{path}: not a Parquet file: {error}") from None
    columns: Columns = table.to_pydict()
    return columns


def read_numpy(path: Path) -> Columns:
    """The columns of a .npy array (2-D: f0, f1, ...; 1-D: f0; structured: its field names), or of a
    .npz archive (one array: as .npy; several 1-D arrays of one length: one column each, by name)."""
    try:
        import numpy
    except ImportError:
        raise DataError(f"{path}: reading {path.suffix} needs numpy: pip install numpy") from None
    try:
        loaded = numpy.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as error:
        raise DataError(f"{path}: not a {path.suffix} file numpy reads without pickle: {error}") from None
    if not isinstance(loaded, numpy.lib.npyio.NpzFile):
        return _array_columns(path, loaded)
    with loaded:
        arrays = {name: loaded[name] for name in loaded.files}
    if len(arrays) == 1:
        return _array_columns(path, next(iter(arrays.values())))
    lengths = {name: array.shape for name, array in arrays.items()}
    if not arrays or any(len(shape) != 1 for shape in lengths.values()) or len(set(lengths.values())) > 1:
        raise DataError(
            f"{path}: an .npz needs one array, or 1-D arrays of one length (one a column); it holds "
            + ", ".join(f"{name} {shape}" for name, shape in lengths.items())
        )
    return {name: array.tolist() for name, array in arrays.items()}


def _array_columns(path: Path, array: Any) -> Columns:
    if array.dtype.names:
        return {name: array[name].tolist() for name in array.dtype.names}
    if array.ndim == 1:
        return {"f0": array.tolist()}
    if array.ndim == 2:
        return {f"f{i}": array[:, i].tolist() for i in range(array.shape[1])}
    raise DataError(f"{path}: a {array.ndim}-D array; profiles are made of 1-D or 2-D ones (rows x features)")


def select_columns(
    columns: Mapping[str, list[Any]], spec: Sequence[str] | None, *, positional: bool
) -> Columns:
    """The columns `--columns` asks for, under their new names: `a,b` selects, `old=new` renames too.
    For an array (`positional`), as many plain names as it has columns, none of them f0, f1, ...,
    name the columns in order."""
    if spec is None:
        return dict(columns)
    names = list(columns)
    if positional and not any("=" in entry or entry in columns for entry in spec):
        if len(spec) != len(names):
            raise DataError(f"--columns names {len(spec)} columns; the array has {len(names)}")
        return dict(zip(spec, columns.values(), strict=True))
    chosen: Columns = {}
    for entry in spec:
        source, _, target = entry.partition("=")
        target = target or source
        if source not in columns:
            shown = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
            raise DataError(f"--columns: no column {source!r} in the data ({shown})")
        if target in chosen:
            raise DataError(f"--columns: {target!r} more than once")
        chosen[target] = columns[source]
    return chosen


def read_columns(path: Path, spec: Sequence[str] | None, categorical: Collection[str]) -> Columns:
    """The training data at `path` as named columns of Python values, by the file's suffix."""
    suffix = path.suffix.lower()
    if suffix in CSV_SUFFIXES:
        text = select_columns(read_csv(path, CSV_SUFFIXES[suffix]), spec, positional=False)
        return {name: typed_cells(cells, name in categorical) for name, cells in text.items()}
    if suffix in PARQUET_SUFFIXES:
        return select_columns(read_parquet(path), spec, positional=False)
    if suffix in NUMPY_SUFFIXES:
        return select_columns(read_numpy(path), spec, positional=True)
    known = ", ".join(sorted([*CSV_SUFFIXES, *PARQUET_SUFFIXES, *NUMPY_SUFFIXES]))
    raise DataError(f"{path}: unknown kind of file {suffix or '(no suffix)'!r}; known: {known}")


# --- writing ------------------------------------------------------------------------------------------


def write_whole(path: Path, text: str) -> None:
    """Write `text` to a temporary file beside `path` and rename it into place: a reader (or a crash)
    sees the old file or the new one, never half of one."""
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent or ".")
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(descriptor, 0o666 & ~umask)  # as open() would make it, not mkstemp's 0600
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def describe(document: Mapping[str, Any]) -> list[str]:
    """One line per feature of a profile: its name, type, bins or categories, and values counted."""
    rows = document["sampleSize"]
    width = max(len(name) for name in document["features"])
    lines = []
    for name, feature in document["features"].items():
        counts = feature["counts"]
        values = sum(counts.values() if isinstance(counts, dict) else counts)
        shape = f"{len(counts)} categories" if feature["type"] == "categorical" else f"{len(counts)} bins"
        missing = f", {rows - values} missing" if values < rows else ""
        lines.append(f"  {name:<{width}}  {feature['type']:<11}  {shape}, {values} values{missing}")
    return lines


# --- command line -------------------------------------------------------------------------------------


def _names(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",")]
    if not all(names):
        raise argparse.ArgumentTypeError(f"expected comma-separated names, got {text!r}")
    return names


def _at_least(low: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="modelfleet profile",
        formatter_class=DefaultsHelpFormatter,
        description="Write the reference profile of a model's training data (per-feature histograms and "
        "quantiles, JSON) for the dataDrift metric of a Monitor; put it where ModelVersion "
        "spec.reference.uri points. Reads CSV or TSV (header row: feature names), Parquet (needs pyarrow) "
        "and .npy / .npz (needs numpy; columns f0, f1, ... unless --columns names them).",
    )
    parser.add_argument("data", type=Path, help="the training data: .csv, .tsv, .parquet, .npy or .npz")
    parser.add_argument("--out", type=Path, required=True, help="where to write the profile (JSON)")
    parser.add_argument("--force", action="store_true", help="replace --out if it exists")
    parser.add_argument(
        "--columns",
        type=_names,
        help="the columns to profile, comma-separated, as the requests name them: NAME, or SOURCE=NAME "
        "to rename; for an array, one name per column in order (default: all columns, as named)",
    )
    parser.add_argument(
        "--categorical",
        type=_names,
        default=[],
        help="columns (by their names in the profile) to count by value even though they hold numbers",
    )
    parser.add_argument(
        "--bins", type=_at_least(2), default=DEFAULT_BINS, help="quantile bins per numeric feature"
    )
    parser.add_argument(
        "--max-categories",
        type=_at_least(1),
        default=MAX_CATEGORIES,
        help="values kept per categorical feature, the most frequent; the rest count as __other__",
    )
    return parser


def say(text: str) -> None:
    print(f"profile: {text}", file=sys.stderr, flush=True)


def main(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(list(argv))
    data: Path = args.data
    out: Path = args.out
    try:
        if not data.is_file():
            raise DataError(f"{data}: no such file" if not data.exists() else f"{data}: not a file")
        if out.exists() and not args.force:
            raise DataError(f"{out} exists (--force replaces it); nothing was written")
        if not out.parent.is_dir():
            raise DataError(f"{out.parent}: no such directory; nothing was written")
        say(f"reading {data}")
        columns = read_columns(data, args.columns, set(args.categorical))
        document = build_profile(
            columns, bins=args.bins, categorical=set(args.categorical), max_categories=args.max_categories
        )
        text = render_profile(document)
        write_whole(out, text)
    except (DataError, ProfileError) as error:
        print(f"modelfleet profile: {error}", file=sys.stderr)
        return 1
    except OSError as error:
        where = f"{error.filename}: " if error.filename else ""
        print(f"modelfleet profile: {where}{error.strerror or error}", file=sys.stderr)
        return 1
    features = document["features"]
    say(f"{document['sampleSize']} rows, {len(features)} features")
    for line in describe(document):
        print(line, file=sys.stderr)
    digest = hashlib.sha256(text.encode()).hexdigest()
    say(f"wrote {out} (sha256:{digest}, for spec.reference.digest)")
    return 0
