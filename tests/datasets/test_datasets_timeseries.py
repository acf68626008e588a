"""Time-series classification files: the five real UEA/UCR TRAIN files in ../shared/data (facts
checked against the files), folder and file paths with a TEST split beside TRAIN, handcrafted
``.ts`` (missing values, variable length, whitespace) and ``.tsv`` files, and one-line errors that
name the file and the line."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from edgenas.datasets.timeseries import open_timeseries, read_ts, read_tsv
from edgenas.errors import DataError

from datasets_helpers import SHARED_DATA

UCR = SHARED_DATA / "ucr_uea_timeseries"

# name: (cases, dims, (min length, max length), classes as declared, cases per class)
REAL = {
    "GunPoint": (50, 1, (150, 150), ["1", "2"], [24, 26]),
    "ItalyPowerDemand": (67, 1, (24, 24), ["1", "2"], [34, 33]),
    "ACSF1": (100, 1, (1460, 1460), [str(i) for i in range(10)], [10] * 10),
    "BasicMotions": (40, 6, (100, 100), ["Standing", "Running", "Walking", "Badminton"], [10] * 4),
    "JapaneseVowels": (270, 12, (7, 26), [str(i) for i in range(1, 10)], [30] * 9),
}


@pytest.fixture
def ucr() -> Path:
    if not UCR.is_dir():
        pytest.skip(f"real time-series files not found at {UCR}")
    return UCR


def _write(path: Path, *lines: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{line}\n" for line in lines))
    return path


def _one_line_error(exc: pytest.ExceptionInfo[DataError], path: Path, line: int | None = None) -> str:
    msg = str(exc.value)
    assert "\n" not in msg
    assert path.name in msg
    if line is not None:
        assert msg.startswith(f"{path}:{line}: "), msg
    return msg


# ---- the real files ------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(REAL))
def test_real_train_files(ucr: Path, name: str) -> None:
    n, dims, (lo, hi), classes, counts = REAL[name]
    t0 = time.perf_counter()
    ds = open_timeseries(ucr / name)
    seconds = time.perf_counter() - t0
    assert seconds < 1.0, f"{name} took {seconds:.2f} s"
    tr = ds.train
    assert (ds.name, ds.format, ds.test) == (name, "ts", None)
    assert tr.problem == name and Path(tr.path).name == f"{name}_TRAIN.ts"
    assert len(tr) == n and len(tr.labels) == n
    assert ds.dims == tr.dims == dims
    assert all(c.dtype == np.float32 and c.ndim == 2 and c.shape[0] == dims for c in tr.cases)
    assert (ds.min_length, ds.max_length) == (int(tr.lengths.min()), int(tr.lengths.max())) == (lo, hi)
    assert ds.equal_length == (lo == hi)
    assert ds.classes == tr.classes == classes
    assert tr.labels.dtype == np.int64
    assert tr.counts() == counts and ds.counts() == {"train": counts}
    assert all(np.isfinite(c).all() for c in tr.cases)  # no file has missing values


def test_real_values_and_labels(ucr: Path) -> None:
    gp = read_ts(ucr / "GunPoint" / "GunPoint_TRAIN.ts")
    np.testing.assert_allclose(gp.cases[0][0, :3], [-0.6478854, -0.64199155, -0.63818632], rtol=1e-6)
    np.testing.assert_allclose(gp.cases[0][0, -2:], [-0.63866571, -0.63865722], rtol=1e-6)
    assert gp.label_names[:5] == ["2", "2", "1", "1", "2"]
    bm = read_ts(ucr / "BasicMotions" / "BasicMotions_TRAIN.ts")
    assert bm.cases[0].shape == (6, 100) and bm.label_names[0] == "Standing"
    assert bm.cases[0][5, -1] == np.float32(-0.03196)
    assert bm.labels.tolist() == [0] * 10 + [1] * 10 + [2] * 10 + [3] * 10  # the file is sorted by class
    jv = read_ts(ucr / "JapaneseVowels" / "JapaneseVowels_TRAIN.ts")
    assert jv.cases[0].shape == (12, 20)
    np.testing.assert_allclose(jv.cases[0][11, -3:], [-0.136857, -0.170498, -0.175986], rtol=1e-6)
    hist = np.bincount(jv.lengths)
    assert hist[7] == 1 and hist[26] == 1 and hist[8] == 0 and len(set(jv.lengths.tolist())) == 19


def test_folder_and_train_path_agree(ucr: Path) -> None:
    a = open_timeseries(ucr / "BasicMotions")
    b = open_timeseries(ucr / "BasicMotions" / "BasicMotions_TRAIN.ts")
    assert a.train.path == b.train.path and a.fingerprint() == b.fingerprint()
    assert a.classes == b.classes and all(np.array_equal(x, y) for x, y in zip(a.train.cases, b.train.cases))


def _header_and_cases(path: Path) -> tuple[list[str], list[str]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    at = next(i for i, line in enumerate(lines) if line.strip().lower() == "@data")
    return lines[: at + 1], lines[at + 1:]


def test_test_split_beside_a_copy(ucr: Path, tmp_path: Path) -> None:
    src = ucr / "BasicMotions" / "BasicMotions_TRAIN.ts"
    folder = tmp_path / "BasicMotions"
    folder.mkdir()
    shutil.copy(src, folder / src.name)
    header, cases = _header_and_cases(src)
    # TEST declares the classes in another order: its labels still index TRAIN's classes
    header = [("@classLabel true Badminton Walking Running Standing" if h.startswith("@classLabel") else h)
              for h in header]
    test_file = _write(folder / "BasicMotions_TEST.ts", *header, cases[5], cases[15], cases[35])
    for path in (folder, folder / src.name):
        ds = open_timeseries(path)
        assert ds.test is not None and Path(ds.test.path) == test_file
        assert ds.test.classes == ds.classes == ["Standing", "Running", "Walking", "Badminton"]
        assert ds.test.label_names == ["Standing", "Running", "Badminton"]
        assert ds.test.labels.tolist() == [0, 1, 3]
        assert ds.counts()["test"] == [1, 1, 0, 1]
        np.testing.assert_array_equal(ds.test.cases[2], ds.train.cases[35])
        assert "test 3" in ds.summary()


def test_test_label_that_train_lacks(ucr: Path, tmp_path: Path) -> None:
    src = ucr / "GunPoint" / "GunPoint_TRAIN.ts"
    shutil.copy(src, tmp_path / src.name)
    header, cases = _header_and_cases(src)
    header = [("@classLabel true 1 2 3" if h.startswith("@classLabel") else h) for h in header]
    third = cases[1].rpartition(":")[0] + ":3"
    test_file = _write(tmp_path / "GunPoint_TEST.ts", *header, cases[0], third)
    with pytest.raises(DataError) as e:
        open_timeseries(tmp_path / src.name)
    msg = _one_line_error(e, test_file, len(header) + 2)
    assert "'3'" in msg and "GunPoint_TRAIN.ts" in msg


def test_test_with_other_dims_than_train(ucr: Path, tmp_path: Path) -> None:
    src = ucr / "BasicMotions" / "BasicMotions_TRAIN.ts"
    shutil.copy(src, tmp_path / src.name)
    header, cases = _header_and_cases(src)
    header = [h for h in header if not h.startswith("@dimensions")]
    five = ":".join(cases[0].split(":")[1:])  # drop the first of six dimensions
    test_file = _write(tmp_path / "BasicMotions_TEST.ts", *header, cases[0], five)
    with pytest.raises(DataError) as e:
        open_timeseries(tmp_path)
    msg = _one_line_error(e, test_file, len(header) + 2)
    assert "has 5 dimensions" in msg and "BasicMotions_TRAIN.ts has 6" in msg


# ---- handcrafted .ts -----------------------------------------------------------------------


HEAD = ["@problemName Toy", "@timeStamps false", "@missing true", "@univariate false", "@dimensions 2",
        "@equalLength false", "@classLabel true b a", "@data"]  # @data is line 8


def test_missing_values_are_nan(tmp_path: Path) -> None:
    f = _write(tmp_path / "Toy_TRAIN.ts", *HEAD, "1,?,3:4,5,?:a", "?,?:1,2:b")
    s = read_ts(f)
    assert s.classes == ["b", "a"] and s.labels.tolist() == [1, 0] and s.problem == "Toy"
    np.testing.assert_array_equal(s.cases[0], np.array([[1, np.nan, 3], [4, 5, np.nan]], dtype=np.float32))
    np.testing.assert_array_equal(s.cases[1], np.array([[np.nan, np.nan], [1, 2]], dtype=np.float32))


def test_variable_length_keeps_each_length(tmp_path: Path) -> None:
    _write(tmp_path / "Toy_TRAIN.ts", *HEAD, "1,2,3:4,5,6:a", "1,2:3,4:b", "1,2,3,4,5:6,7,8,9,10:a")
    ds = open_timeseries(tmp_path / "Toy_TRAIN.ts")
    assert [c.shape for c in ds.train.cases] == [(2, 3), (2, 2), (2, 5)]
    assert ds.train.lengths.tolist() == [3, 2, 5]
    assert (ds.equal_length, ds.min_length, ds.max_length, ds.dims) == (False, 2, 5, 2)
    np.testing.assert_array_equal(ds.train.cases[2][1], [6, 7, 8, 9, 10])


def test_whitespace_crlf_comments_and_case(tmp_path: Path) -> None:
    text = ("\ufeff# a comment\r\n\r\n  @PROBLEMNAME  Toy  \r\n@TimeStamps FALSE\r\n@univariate   True\r\n"
            "@equallength true\r\n@SERIESLENGTH 3\r\n@classlabel TRUE  x  y \r\n#between\r\n@DATA\r\n"
            "  1.5 , 2 ,3e1 : x  \r\n\r\n# a comment among the cases\r\n\t-1,-2,-3:y\t\r\n")
    f = tmp_path / "Toy_TRAIN.ts"
    f.write_text(text, encoding="utf-8", newline="")
    s = read_ts(f)
    assert s.classes == ["x", "y"] and s.labels.tolist() == [0, 1] and s.dims == 1
    np.testing.assert_array_equal(s.cases[0], [[1.5, 2, 30]])
    np.testing.assert_array_equal(s.cases[1], [[-1, -2, -3]])


def test_dims_from_the_first_case_without_dimensions(tmp_path: Path) -> None:
    f = _write(tmp_path / "T_TRAIN.ts", "@univariate false", "@classLabel true 0 1", "@data",
               "1,2:3,4:5,6:0", "1:2:3:1")
    s = read_ts(f)
    assert s.dims == 3 and [c.shape for c in s.cases] == [(3, 2), (3, 1)]


# (lines of the file, line number of the error, a fragment of the message)
TS_ERRORS = {
    "unknown keyword": (["@problemName T", "@seriesLenght 3", "@data"], 2, "did you mean @seriesLength"),
    "bad boolean": (["@univariate maybe", "@classLabel true a b", "@data", "1:a"], 1, "true or false"),
    "bad integer": (["@dimensions two", "@classLabel true a b", "@data", "1:a"], 1, "positive integer"),
    "twice": (["@classLabel true a b", "@missing false", "@missing false", "@data", "1:a"], 3, "given twice"),
    "no @data": (["# c", "@classLabel true a b", "@equalLength true"], 3, "no @data"),
    "data before @data": (["@classLabel true a b", "1,2:a", "@data"], 2, "before @data"),
    "header after @data": (["@classLabel true a b", "@data", "1,2:a", "@missing false"], 4, "after @data"),
    "timestamps": (["@timeStamps true", "@classLabel true a b", "@data", "(0,1):a"], 1, "not supported"),
    "classLabel false": (["@classLabel false", "@data", "1,2:a"], 1, "not a classification file"),
    "no classLabel": (["@problemName T", "@data", "1,2:3"], 2, "no @classLabel"),
    "targetLabel": (["@targetLabel true", "@data", "1,2:3.5"], 1, "regression"),
    "no labels": (["@classLabel true", "@data", "1:a"], 1, "no labels"),
    "seriesLength disagrees": (["@equalLength true", "@seriesLength 3", "@classLabel true a b", "@data",
                                "1,2,3:a", "1,2,3,4:b"], 6, "has length 4; @seriesLength says 3"),
    "equalLength disagrees": (["@equalLength true", "@classLabel true a b", "@data", "# c",
                               "1,2:a", "", "1,2,3:b"], 7, "the first case (line 5) has 2"),
    "dims vs @dimensions": (["@dimensions 3", "@classLabel true a b", "@data", "1:2:3:a", "1:2:b"], 5,
                            "has 2 dimensions; @dimensions says 3"),
    "dims vs @univariate": (["@univariate true", "@classLabel true a b", "@data", "1,2:3,4:a"], 4,
                            "has 2 dimensions; @univariate true says 1"),
    "dims vs first case": (["@classLabel true a b", "@data", "1:2:a", "1:2:b", "1:b"], 5,
                           "has 1 dimension; the first case (line 3) has 2"),
    "unequal dims in a case": (["@classLabel true a b", "@data", "1,2,3:4,5,6:a", "1,2,3:4,5:b"], 4,
                               "dimension 1 has 3 values, dimension 2 has 2"),
    "not a number": (["@classLabel true a b", "@data", "1,2:3,4:a", "1,2:3,x4:b"], 4,
                     "value 2 of dimension 2 is not a number: 'x4'"),
    "univariate not a number": (["@classLabel true a b", "@data", "1,2,abc:a"], 3, "value 3 is not a number: 'abc'"),
    "empty value": (["@classLabel true a b", "@data", "1,,3:a"], 3, "value 2 is empty"),
    "no label separator": (["@classLabel true a b", "@data", "1,2,3"], 3, "no ':'"),
    "unknown label": (["@classLabel true a b", "@data", "1:a", "2:c"], 4, "'c' is not in @classLabel (a, b)"),
    "no cases": (["@classLabel true a b", "@data", "# nothing", ""], 2, "no cases"),
}


@pytest.mark.parametrize("text", ["", "\n  \n"])
def test_empty_file(tmp_path: Path, text: str) -> None:
    f = tmp_path / "E_TRAIN.ts"
    f.write_text(text)
    with pytest.raises(DataError) as e:
        open_timeseries(f)
    assert "empty file" in _one_line_error(e, f, 1)


# ---- .tsv ----------------------------------------------------------------------------------


def test_tsv_equal_length_with_test(tmp_path: Path) -> None:
    _write(tmp_path / "U_TRAIN.tsv", "2\t0.5\t1\t1.5", "10\t-1\t-2\t-3", "1.0\t7\t8\t9", "2\t0\t0\t0")
    _write(tmp_path / "U_TEST.tsv", "10\t1\t2\t3", "1\t4\t5\t6")
    ds = open_timeseries(tmp_path)
    assert ds.format == "tsv" and ds.classes == ["1", "2", "10"]  # numeric labels sorted by value
    assert ds.train.labels.tolist() == [1, 2, 0, 1] and ds.train.counts() == [1, 2, 1]
    assert (ds.dims, ds.equal_length, ds.min_length, ds.max_length) == (1, True, 3, 3)
    np.testing.assert_array_equal(ds.train.cases[1], [[-1, -2, -3]])
    assert ds.test is not None and ds.test.labels.tolist() == [2, 0] and ds.test.classes == ds.classes


def test_tsv_variable_length_and_commas(tmp_path: Path) -> None:
    f = _write(tmp_path / "V_TRAIN.tsv", "a,1,2,3,4", "b,1,2,NaN,NaN", "a,1,,3,,", "b\t5\tNaN\t6\tNaN\tNaN\t")
    s = read_tsv(f)
    assert s.classes == ["a", "b"] and s.labels.tolist() == [0, 1, 0, 1]
    assert s.lengths.tolist() == [4, 2, 3, 3]
    np.testing.assert_array_equal(s.cases[2], [[1, np.nan, 3]])  # an empty value inside a case is missing
    np.testing.assert_array_equal(s.cases[3], [[5, np.nan, 6]])
    ds = open_timeseries(f)
    assert (ds.equal_length, ds.min_length, ds.max_length) == (False, 2, 4)


TSV_ERRORS = {
    "not a number": (["1\t1\t2", "2\t1\tfoo\t3"], 2, "value 2 is not a number: 'foo'"),
    "no values": (["1\t1\t2", "", "2"], 3, "no values"),
    "all NaN": (["1\t1\t2", "2\tNaN\tNaN"], 2, "no values"),
    "no label": (["1\t1\t2", "\t\t", "NaN\t1\t2"], 3, "label"),
}


@pytest.mark.parametrize("fmt, case", [("ts", c) for c in sorted(TS_ERRORS)] + [("tsv", c) for c in sorted(TSV_ERRORS)])
def test_errors_name_file_and_line(tmp_path: Path, fmt: str, case: str) -> None:
    lines, line, fragment = (TS_ERRORS if fmt == "ts" else TSV_ERRORS)[case]
    f = _write(tmp_path / f"Bad_TRAIN.{fmt}", *lines)
    with pytest.raises(DataError) as e:
        (read_ts if fmt == "ts" else read_tsv)(f)
    assert fragment in _one_line_error(e, f, line)


def test_tsv_test_label_that_train_lacks(tmp_path: Path) -> None:
    _write(tmp_path / "U_TRAIN.tsv", "1\t1\t2", "2\t3\t4")
    test_file = _write(tmp_path / "U_TEST.tsv", "1\t1\t2", "2\t3\t4", "3\t5\t6")
    with pytest.raises(DataError) as e:
        open_timeseries(tmp_path / "U_TRAIN.tsv")
    assert "'3' is not a class of U_TRAIN.tsv" in _one_line_error(e, test_file, 3)


# ---- paths ---------------------------------------------------------------------------------


def test_missing_path(tmp_path: Path) -> None:
    for path in (tmp_path / "nowhere", tmp_path / "Gone_TRAIN.ts"):
        with pytest.raises(DataError) as e:
            open_timeseries(path)
        assert "does not exist" in _one_line_error(e, path)
    with pytest.raises(DataError) as e:
        read_ts(tmp_path / "Gone_TRAIN.ts")
    assert "does not exist" in _one_line_error(e, tmp_path / "Gone_TRAIN.ts")


def test_folder_without_train_file_lists_its_files(tmp_path: Path) -> None:
    folder = tmp_path / "Toy"
    _write(folder / "Toy_TEST.ts", *HEAD, "1:2:a")
    _write(folder / "Toy_TRAIN.arff", "@relation toy")
    with pytest.raises(DataError) as e:
        open_timeseries(folder)
    msg = _one_line_error(e, folder)
    assert str(folder) in msg and "Toy_TEST.ts" in msg and "Toy_TRAIN.arff" in msg and "_TRAIN.ts" in msg
    with pytest.raises(DataError) as e:
        open_timeseries(folder / "Toy_TEST.ts")
    assert "_TRAIN" in _one_line_error(e, folder / "Toy_TEST.ts")


def test_folder_prefers_its_own_name_and_ts(tmp_path: Path) -> None:
    folder = tmp_path / "Toy"
    _write(folder / "Toy_TRAIN.ts", *HEAD, "1:2:a", "3:4:b")
    _write(folder / "Toy_TRAIN.tsv", "1\t1\t2")
    _write(folder / "Other_TRAIN.tsv", "1\t1\t2")
    ds = open_timeseries(folder)
    assert ds.format == "ts" and Path(ds.train.path).name == "Toy_TRAIN.ts" and ds.test is None
    (folder / "Toy_TRAIN.ts").unlink()
    (folder / "Toy_TRAIN.tsv").unlink()
    _write(folder / "Third_TRAIN.tsv", "1\t1\t2")
    with pytest.raises(DataError) as e:
        open_timeseries(folder)
    assert "several _TRAIN files" in _one_line_error(e, folder / "Other_TRAIN.tsv")
