"""Time-series classification datasets: the sktime/UEA ``.ts`` and the UCR ``.tsv`` formats.

Layout (``open_timeseries``)::

    root/<Name>_TRAIN.ts  or  root/<Name>_TRAIN.tsv     required (or give the file itself)
    root/<Name>_TEST.ts   or  root/<Name>_TEST.tsv      optional, same format as TRAIN

A folder with several ``_TRAIN`` files takes the one named after the folder, ``.ts`` before
``.tsv``. The TEST file is read against the TRAIN file: it must use TRAIN's classes and number of
dimensions. Every case is a float32 array [dims, length]; cases of a variable-length dataset keep
their own lengths (nothing is padded or resampled here).

``.ts`` (sktime/UEA): ``#`` comments and blank lines anywhere; header lines ``@problemName``,
``@timeStamps false`` (``true`` is not supported), ``@missing``, ``@univariate``,
``@dimensions N`` (or ``@dimension``), ``@equalLength``, ``@seriesLength N``,
``@classLabel true <label> …`` and ``@data``, keywords and booleans case-insensitive. Then one
case per line: dimensions separated by ``:``, values by ``,``, the class label after the last
``:``; ``?`` is a missing value (NaN). Classes are in the order ``@classLabel`` declares them.

``.tsv`` (UCR 2018 archive): one case per line, the label first, then the values, separated by
tabs or commas. Empty or ``NaN`` values at the end of a line are the padding of a shorter case and
are dropped; elsewhere they are missing values (NaN). Numeric labels are named canonically
(``1.0`` → ``1``) and sorted by value; other labels are sorted as strings.

Checks, each a one-line :class:`DataError` that starts ``<file>:<line>:``: an unknown or
malformed header line, a header value of the wrong kind, ``@timeStamps true``, ``@classLabel
false`` or ``@targetLabel`` (not a classification file), no ``@classLabel`` or no ``@data``; a case
whose number of dimensions differs from ``@dimensions``/``@univariate``, from the first case or
from TRAIN; dimensions of unequal length within a case; a case whose length differs from
``@seriesLength`` (ignored under ``@equalLength false``) or, under ``@equalLength true``, from the
first case; a value that is not a number (named, with its position); a label ``@classLabel`` (or,
for TEST, TRAIN) lacks; an empty file or one without cases. A missing path, and a folder without
a ``_TRAIN`` file (its files listed), are one-line errors too.

Parsing converts each line with one numpy call (values to float32 in C); only a line that fails is
looked at value by value, to say which value is wrong.
"""

from __future__ import annotations

import difflib
import hashlib
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from edgenas.datasets.base import split_fingerprint
from edgenas.errors import DataError

TS_KEYWORDS = ("problemName", "timeStamps", "missing", "univariate", "dimensions", "equalLength",
               "seriesLength", "classLabel", "targetLabel", "data")
_KEYWORD = {k.lower(): k for k in TS_KEYWORDS} | {"dimension": "dimensions"}
_BOOL = {"true": True, "false": False}
SPLIT_FILE = re.compile(r"^(?P<name>.+)_(?P<split>train|test)\.(?P<ext>tsv|ts)$", re.IGNORECASE)


@dataclass
class TimeSeriesSplit:
    """The cases of one file: ``cases[i]`` is float32 [dims, length_i] with class index
    ``labels[i]`` (int64) into ``classes``."""

    path: str
    cases: list[np.ndarray]
    labels: np.ndarray
    classes: list[str]
    dims: int
    problem: str = ""  # @problemName of a .ts file ("" if absent, or .tsv)

    def __len__(self) -> int:
        return len(self.cases)

    @property
    def lengths(self) -> np.ndarray:
        """int64 [n]: the length of every case."""
        return np.array([c.shape[1] for c in self.cases], dtype=np.int64)

    @property
    def label_names(self) -> list[str]:
        """The class name of every case."""
        return [self.classes[i] for i in self.labels]

    def counts(self) -> list[int]:
        """The number of cases of each class."""
        return np.bincount(self.labels, minlength=len(self.classes)).tolist()


@dataclass
class TimeSeriesDataset:
    """A TRAIN split, an optional TEST split read against it, and facts over both: ``dims``,
    ``min_length``/``max_length`` and ``equal_length`` (every case of both the same length)."""

    name: str
    format: str  # "ts" or "tsv"
    train: TimeSeriesSplit
    test: TimeSeriesSplit | None
    classes: list[str]
    dims: int
    equal_length: bool
    min_length: int
    max_length: int

    def splits(self) -> dict[str, TimeSeriesSplit]:
        """The splits that exist: "train" and, when there is a TEST file, "test"."""
        return {"train": self.train} | ({"test": self.test} if self.test is not None else {})

    def counts(self) -> dict[str, list[int]]:
        """Per split, the number of cases of each class."""
        return {name: s.counts() for name, s in self.splits().items()}

    def fingerprint(self) -> str:
        """Stable hash of the name, classes and every case (values, shape, label)."""
        items = {name: list(zip(s.cases, s.labels.tolist())) for name, s in self.splits().items()}
        return split_fingerprint(f"{self.name}\0{self.format}\0{self.dims}\0", self.classes, items,
                                 lambda it: f"{it[0].shape}\0{it[1]}\0{hashlib.sha1(it[0].tobytes()).hexdigest()}\n")

    def summary(self) -> str:
        length = str(self.min_length) if self.equal_length else f"{self.min_length}-{self.max_length}"
        test = f", test {len(self.test)}" if self.test is not None else ", no test split"
        return (f"{self.name}: {len(self.classes)} classes, {self.dims} dim{'s' if self.dims > 1 else ''}, "
                f"length {length}, train {len(self.train)}{test}")


# ---- shared helpers ------------------------------------------------------------------------


def _err(path: Path, line: int, message: str) -> DataError:
    return DataError(f"{path}:{line}: {message}")


def _show(text: str, limit: int = 24) -> str:
    text = text.strip()
    return repr(text if len(text) <= limit else text[:limit] + "…")


def _names(items: list[str], limit: int = 10) -> str:
    return ", ".join(items[:limit]) + (f", … ({len(items)} in all)" if len(items) > limit else "")


def _lines(path: Path) -> list[str]:
    """The lines of ``path`` (numbered from 1 as an editor does), without line ends."""
    if not path.exists():
        raise DataError(f"{path} does not exist")
    if not path.is_file():
        raise DataError(f"{path} is not a file")
    try:
        text = path.read_text(encoding="utf-8-sig", errors="replace")  # comments may be Latin-1
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror or e}") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if not any(line.strip() for line in lines):
        raise _err(path, 1, "empty file")
    return lines


def _parse_values(tokens: list[str], path: Path, line: int, where: Callable[[int], str],
                  empty_is_nan: bool) -> np.ndarray:
    """float32 values of ``tokens`` ("?", and "" when ``empty_is_nan``, are NaN), or a DataError
    naming the first one that is not a number (``where(k)`` says where value k is)."""
    try:
        return np.asarray(tokens, dtype=np.float32)
    except ValueError:
        pass
    out = np.empty(len(tokens), dtype=np.float32)
    for k, tok in enumerate(tokens):
        t = tok.strip()
        if t == "?" or (t == "" and empty_is_nan):
            out[k] = np.nan
            continue
        if t == "":
            raise _err(path, line, f"{where(k)} is empty")
        try:
            out[k] = np.float32(t)
        except ValueError:
            raise _err(path, line, f"{where(k)} is not a number: {_show(t)}") from None
    return out


# ---- .ts -----------------------------------------------------------------------------------


@dataclass
class _Header:
    problem: str = ""
    univariate: bool | None = None
    dims: int | None = None
    dims_line: int = 0
    equal_length: bool | None = None
    length: int | None = None
    classes: list[str] | None = None
    data_line: int = 0


def _bool(path: Path, line: int, key: str, args: list[str]) -> bool:
    if len(args) != 1 or args[0].lower() not in _BOOL:
        raise _err(path, line, f"@{key} takes true or false, got {_show(' '.join(args)) if args else 'nothing'}")
    return _BOOL[args[0].lower()]


def _count(path: Path, line: int, key: str, args: list[str]) -> int:
    if len(args) != 1 or not args[0].isdigit() or int(args[0]) < 1:
        raise _err(path, line, f"@{key} takes a positive integer, got {_show(' '.join(args)) if args else 'nothing'}")
    return int(args[0])


def _header_line(h: _Header, seen: dict[str, int], text: str, path: Path, line: int) -> None:
    word, *args = text.split()
    key = _KEYWORD.get(word[1:].lower())
    if key is None:
        close = difflib.get_close_matches(word[1:].lower(), list(_KEYWORD), n=1)
        hint = f"; did you mean @{_KEYWORD[close[0]]}?" if close else f" (known: @{', @'.join(TS_KEYWORDS)})"
        raise _err(path, line, f"unknown header line {_show(word)}{hint}")
    if key in seen:
        raise _err(path, line, f"@{key} is given twice (first on line {seen[key]})")
    seen[key] = line
    if key == "problemName":
        if not args:
            raise _err(path, line, "@problemName has no name")
        h.problem = " ".join(args)
    elif key == "timeStamps":
        if _bool(path, line, key, args):
            raise _err(path, line, "@timeStamps true (time-stamped values) is not supported; only @timeStamps false")
    elif key == "missing":
        _bool(path, line, key, args)  # "?" is read as NaN either way
    elif key == "univariate":
        h.univariate = _bool(path, line, key, args)
    elif key == "dimensions":
        h.dims, h.dims_line = _count(path, line, key, args), line
    elif key == "equalLength":
        h.equal_length = _bool(path, line, key, args)
    elif key == "seriesLength":
        h.length = _count(path, line, key, args)
    elif key == "classLabel":
        if not args or not _bool(path, line, key, args[:1]):
            raise _err(path, line, "@classLabel false: not a classification file (declare the labels: "
                       "@classLabel true <label> …)" if args else "@classLabel takes true and the labels")
        labels = args[1:]
        if not labels:
            raise _err(path, line, "@classLabel true lists no labels")
        twice = sorted({x for x in labels if labels.count(x) > 1})
        if twice:
            raise _err(path, line, f"@classLabel lists {_show(twice[0])} twice")
        h.classes = labels
    elif key == "targetLabel":
        raise _err(path, line, "@targetLabel: a regression file; only classification (@classLabel true …) is supported")
    else:  # data
        if args:
            raise _err(path, line, f"@data takes nothing, got {_show(' '.join(args))}")
        h.data_line = line


def _read_header(lines: list[str], path: Path) -> _Header:
    h = _Header()
    seen: dict[str, int] = {}
    for i, raw in enumerate(lines, 1):
        text = raw.strip()
        if not text or text.startswith("#"):
            continue
        if not text.startswith("@"):
            raise _err(path, i, f"a data line before @data: {_show(text)}")
        _header_line(h, seen, text, path, i)
        if h.data_line:
            break
    if not h.data_line:
        raise _err(path, len(lines), "no @data line: the header must end with @data")
    if h.classes is None:
        raise _err(path, h.data_line, "no @classLabel line: not a classification file")
    if h.univariate and h.dims is not None and h.dims != 1:
        raise _err(path, h.dims_line, f"@dimensions {h.dims} with @univariate true")
    return h


def read_ts(path: str | Path, train: TimeSeriesSplit | None = None) -> TimeSeriesSplit:
    """Read a sktime/UEA ``.ts`` classification file (module doc). With ``train``, the file is a
    TEST split: its labels are indices into ``train.classes`` and its cases must have ``train.dims``
    dimensions."""
    p = Path(path)
    lines = _lines(p)
    h = _read_header(lines, p)
    own = {c: i for i, c in enumerate(h.classes or [])}
    index = {c: i for i, c in enumerate(train.classes)} if train is not None else own
    dims, dims_why = None, ""
    if h.dims is not None:
        dims, dims_why = h.dims, f"@dimensions says {h.dims}"
    elif h.univariate:
        dims, dims_why = 1, "@univariate true says 1"
    if train is not None:
        tname = Path(train.path).name
        if dims is not None and dims != train.dims:
            raise _err(p, h.dims_line or h.data_line, f"{dims_why}, but {tname} has {train.dims} dimensions")
        dims, dims_why = train.dims, f"{tname} has {train.dims}"
    length, length_why = None, ""
    if h.length is not None and h.equal_length is not False:
        length, length_why = h.length, f"@seriesLength says {h.length}"
    cases: list[np.ndarray] = []
    labels: list[int] = []
    for i in range(h.data_line + 1, len(lines) + 1):
        text = lines[i - 1].strip()
        if not text or text.startswith("#"):
            continue
        if text.startswith("@"):
            raise _err(p, i, f"a header line after @data: {_show(text)}")
        body, sep, label = text.rpartition(":")
        label = label.strip()
        if not sep or not body.strip():
            raise _err(p, i, "expected <values>[:<values>…]:<label>, found no ':' before the label")
        parts = body.split(":")
        if dims is None:
            dims, dims_why = len(parts), f"the first case (line {i}) has {len(parts)}"
        elif len(parts) != dims:
            k = len(parts)
            raise _err(p, i, f"this case has {k} dimension{'' if k == 1 else 's'}; {dims_why}")
        sizes = [part.count(",") + 1 for part in parts]
        n = sizes[0]
        if any(s != n for s in sizes):
            d = next(k for k, s in enumerate(sizes) if s != n)
            raise _err(p, i, f"dimensions of unequal length in one case: dimension 1 has {n} values, "
                       f"dimension {d + 1} has {sizes[d]}")
        if length is None and h.equal_length:
            length, length_why = n, f"the first case (line {i}) has {n} and @equalLength is true"
        elif length is not None and n != length:
            raise _err(p, i, f"this case has length {n}; {length_why}")
        flat = body.replace(":", ",")
        try:
            values = np.asarray((flat.replace("?", "nan") if "?" in flat else flat).split(","), dtype=np.float32)
        except ValueError:
            one = dims == 1

            def where(k: int) -> str:
                return f"value {k % n + 1}" + ("" if one else f" of dimension {k // n + 1}")

            values = _parse_values(flat.split(","), p, i, where, empty_is_nan=False)
        if label not in own:
            raise _err(p, i, f"label {_show(label)} is not in @classLabel ({_names(list(own))})")
        if label not in index:
            assert train is not None
            raise _err(p, i, f"label {_show(label)} is not a class of {Path(train.path).name} ({_names(train.classes)})")
        cases.append(values.reshape(len(parts), n))
        labels.append(index[label])
    if not cases:
        raise _err(p, h.data_line, "no cases after @data")
    classes = list(train.classes) if train is not None else list(h.classes or [])
    return TimeSeriesSplit(path=str(p), cases=cases, labels=np.array(labels, dtype=np.int64), classes=classes,
                           dims=len(cases[0]), problem=h.problem)


# ---- .tsv ----------------------------------------------------------------------------------


def _tsv_label(text: str) -> str:
    """A numeric label in canonical form ("1.0", "01" → "1"); any other label as written."""
    try:
        v = float(text)
    except ValueError:
        return text
    return str(int(v)) if math.isfinite(v) and v == int(v) else text


def _sort_labels(labels: set[str]) -> list[str]:
    try:
        return sorted(labels, key=float)
    except ValueError:
        return sorted(labels)


def read_tsv(path: str | Path, train: TimeSeriesSplit | None = None) -> TimeSeriesSplit:
    """Read a UCR ``.tsv`` file (module doc): one dimension; classes sorted unique (numerically when
    every label is a number). With ``train``, the file is a TEST split labelled with
    ``train.classes``."""
    p = Path(path)
    lines = _lines(p)
    cases: list[np.ndarray] = []
    names: list[tuple[int, str]] = []
    for i, raw in enumerate(lines, 1):
        text = raw.strip().rstrip(",\t ")  # trailing separators pad a shorter case
        if not text or text.startswith("#"):
            continue
        tokens = text.replace("\t", ",").split(",")
        label = tokens[0].strip()
        if not label or label.lower() == "nan":
            raise _err(p, i, "the class label (first column) is missing")
        if len(tokens) < 2:
            raise _err(p, i, "no values after the label (expected tab- or comma-separated values)")

        values = _parse_values(tokens[1:], p, i, lambda k: f"value {k + 1}", empty_is_nan=True)
        present = np.flatnonzero(~np.isnan(values))
        if not len(present):
            raise _err(p, i, "a case with no values (all NaN)")
        cases.append(values[: present[-1] + 1].reshape(1, -1))
        names.append((i, _tsv_label(label)))
    if not cases:
        raise _err(p, len(lines), "no cases")
    if train is not None:
        if train.dims != 1:
            raise _err(p, names[0][0], f"a .tsv case has 1 dimension, {Path(train.path).name} has {train.dims}")
        classes = list(train.classes)
    else:
        classes = _sort_labels({name for _, name in names})
    index = {c: k for k, c in enumerate(classes)}
    for i, name in names:
        if name not in index:
            assert train is not None
            raise _err(p, i, f"label {_show(name)} is not a class of {Path(train.path).name} ({_names(classes)})")
    labels = np.array([index[name] for _, name in names], dtype=np.int64)
    return TimeSeriesSplit(path=str(p), cases=cases, labels=labels, classes=classes, dims=1)


# ---- datasets ------------------------------------------------------------------------------


def _split_file(path: Path) -> tuple[str, str, str] | None:
    """(name, "train"/"test", "ts"/"tsv") of ``<Name>_TRAIN.ts``-style file names, else None."""
    m = SPLIT_FILE.match(path.name)
    return (m["name"], m["split"].lower(), m["ext"].lower()) if m else None


def _train_in(folder: Path) -> Path:
    trains = [(p, s) for p in sorted(folder.iterdir())
              if p.is_file() and (s := _split_file(p)) is not None and s[1] == "train"]
    if not trains:
        has = _names([p.name for p in sorted(folder.iterdir()) if not p.name.startswith(".")]) or "nothing"
        raise DataError(f"{folder} has no <Name>_TRAIN.ts or <Name>_TRAIN.tsv file (it has: {has})")
    named = [t for t in trains if t[1][0] == folder.name] or trains
    if len({s[0] for _, s in named}) > 1:
        raise DataError(f"{folder} has several _TRAIN files ({_names([p.name for p, _ in named])}); give one of them")
    return min(named, key=lambda t: t[1][2] != "ts")[0]


def open_timeseries(path: str | Path) -> TimeSeriesDataset:
    """Open a dataset folder or its ``<Name>_TRAIN.ts``/``.tsv`` file; ``<Name>_TEST.*`` of the same
    format beside it, when present, is the test split (module doc)."""
    p = Path(path).expanduser().resolve()
    if not p.exists():
        raise DataError(f"dataset path {p} does not exist")
    train_file = _train_in(p) if p.is_dir() else p
    parts = _split_file(train_file)
    if parts is None or parts[1] != "train":
        raise DataError(f"{train_file} is not a <Name>_TRAIN.ts or <Name>_TRAIN.tsv file; give that file or its folder")
    name, _, ext = parts
    read = read_ts if ext == "ts" else read_tsv
    train = read(train_file)
    test_name = f"{name}_test.{ext}"
    tests = [q for q in sorted(train_file.parent.iterdir()) if q.is_file() and q.name.lower() == test_name.lower()]
    test = read(tests[0], train) if tests else None
    lengths = np.concatenate([s.lengths for s in ([train] if test is None else [train, test])])
    lo, hi = int(lengths.min()), int(lengths.max())
    return TimeSeriesDataset(name=name, format=ext, train=train, test=test, classes=list(train.classes),
                             dims=train.dims, equal_length=lo == hi, min_length=lo, max_length=hi)


__all__ = ["TimeSeriesDataset", "TimeSeriesSplit", "open_timeseries", "read_ts", "read_tsv"]
