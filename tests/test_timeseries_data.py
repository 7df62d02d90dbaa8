"""Readers of the Yahoo, SMD and WaDi layouts, their one-line errors, the synthetic writer, and the data guard.

Real-data tests read the folders named by RATIONANOMALY_YAHOO_A1, RATIONANOMALY_SMD and RATIONANOMALY_WADI
and are skipped with that reason when unset (Yahoo and WaDi may not be redistributed; users fetch them).
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

from rationanomaly.paths import REPO_ROOT
from rationanomaly.timeseries.data import (
    WADI_ATTACK_FILE,
    WADI_LABEL,
    WADI_NORMAL_FILE,
    Series,
    SeriesFormatError,
    read_dataset,
    read_smd,
    read_wadi,
    read_yahoo,
    read_yahoo_csv,
)
from rationanomaly.timeseries.synthetic import SynthSpec, write_synthetic


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_yahoo_csv_reads_values_and_labels(tmp_path):
    series = read_yahoo_csv(write(tmp_path / "real_1.csv", "timestamp,value,is_anomaly\n1,0.5,0\n2,7.25,1\n3,1,0\n"))
    assert series.name == "real_1"
    assert series.values.dtype == np.float32 and series.values[:, 0].tolist() == [0.5, 7.25, 1.0]
    assert series.labels.dtype == np.int8 and series.labels.tolist() == [0, 1, 0]


def test_yahoo_a3_layout_reads_its_second_and_third_columns(tmp_path):
    text = (
        "timestamps,value,anomaly,changepoint,trend,noise,seasonality1,seasonality2,seasonality3\n"
        "1,3.5,0,0,1,0,0,0,0\n2,9.0,1,0,1,0,0,0,0\n"
    )
    series = read_yahoo_csv(write(tmp_path / "A3Benchmark-TS1.csv", text))
    assert series.values[:, 0].tolist() == [3.5, 9.0] and series.labels.tolist() == [0, 1]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("timestamp,value\n1,0.5\n", r"2 columns; the Yahoo layout is timestamp,value,is_anomaly"),  # column count
        ("timestamp,value,is_anomaly\n1,0.5,0\n2,,0\n", r"line 3, column 'value' is 'nan'"),  # NaN value
        (
            "timestamp,value,is_anomaly\n1,0.5,0\n2,0.7,2\n",
            r"line 3 has label 2; labels must be 0",
        ),  # label outside 0/1
        ("timestamp,value,is_anomaly\n1,0.5,0\n2,0.7,0,9\n", r"every row needs the same number"),  # ragged row
        ("timestamp,value,is_anomaly\n1,abc,0\n", r"line 2, column 'value' is 'abc', not a number"),  # text value
    ],
)
def test_yahoo_errors_name_the_file_the_line_and_the_fix(tmp_path, text, message):
    path = write(tmp_path / "real_9.csv", text)
    with pytest.raises(SeriesFormatError, match=message) as caught:
        read_yahoo_csv(path)
    assert str(path) in str(caught.value) and "\n" not in str(caught.value)


def test_yahoo_folder_is_read_in_natural_order(tmp_path):
    for index in (10, 2, 1):
        write(tmp_path / f"real_{index}.csv", f"timestamp,value,is_anomaly\n1,{index},0\n")
    assert [s.name for s in read_yahoo(tmp_path).series] == ["real_1", "real_2", "real_10"]


def test_an_empty_folder_says_what_it_expected(tmp_path):
    with pytest.raises(SeriesFormatError, match="holds no \\*.csv files"):
        read_yahoo(tmp_path)
    with pytest.raises(SeriesFormatError, match="layout 'kpi' is unknown"):
        read_dataset(tmp_path, "kpi")


def smd_folder(root: Path, machines: int = 2, rows: int = 4, columns: int = 3) -> Path:
    for index in range(1, machines + 1):
        values = "\n".join(",".join(f"{0.1 * (r + c):.2f}" for c in range(columns)) for r in range(rows)) + "\n"
        write(root / "train" / f"machine-1-{index}.txt", values)
        write(root / "test" / f"machine-1-{index}.txt", values)
        write(root / "test_label" / f"machine-1-{index}.txt", "0\n1\n0\n0\n"[: 2 * rows])
    return root


def test_smd_reads_test_series_with_labels_and_train_files_as_normal_data(tmp_path):
    dataset = read_smd(smd_folder(tmp_path))
    assert [s.name for s in dataset.series] == ["machine-1-1", "machine-1-2"]
    assert dataset.series[0].values.shape == (4, 3) and dataset.series[0].labels.tolist() == [0, 1, 0, 0]
    assert len(dataset.normal) == 2 and dataset.normal[0].shape == (4, 3)


def test_smd_ignores_csv_copies_beside_the_txt_files(tmp_path):
    root = smd_folder(tmp_path)
    write(root / "test" / "machine-1-1.csv", "0,1,2\n")  # what the reference's converter left behind (bug 8)
    assert len(read_smd(root).series) == 2


def test_smd_labels_that_do_not_match_the_rows_are_refused(tmp_path):
    root = smd_folder(tmp_path)
    write(root / "test_label" / "machine-1-2.txt", "0\n1\n0\n")
    with pytest.raises(SeriesFormatError, match="3 labels for 4 rows"):
        read_smd(root)


def test_smd_machines_with_other_metrics_are_refused(tmp_path):
    root = smd_folder(tmp_path)
    write(root / "test" / "machine-1-2.txt", "0.1,0.2\n" * 4)
    with pytest.raises(SeriesFormatError, match="2 columns, but .* has 3"):
        read_smd(root)


def wadi_folder(root: Path, rows: int = 20) -> Path:
    header = "Row,Date,Time,1_AIT_001_PV,1_AIT_002_PV,2_FIT_001_PV,EMPTY"
    normal = [header] + [f"{r},1/1/2017,00:00:{r:02d},{r * 0.5},{3.0},{r % 3},\n" for r in range(rows)]
    write(root / WADI_NORMAL_FILE, "\n".join(line.rstrip("\n") for line in normal) + "\n")
    attack_header = f'Row ,Date ,Time ,1_AIT_001_PV,1_AIT_002_PV,2_FIT_001_PV,"{WADI_LABEL}"'  # quoted: it has a comma
    lines = ["title line of the release", attack_header]
    lines += [f"{r},1/1/2017,01:00:{r:02d},{r * 0.25},{3.0},{r % 2},{-1 if 8 <= r < 11 else 1}" for r in range(rows)]
    write(root / WADI_ATTACK_FILE, "\n".join(lines) + "\n")
    return root


def test_wadi_pairs_attack_readings_with_their_own_labels(tmp_path):
    dataset = read_wadi(wadi_folder(tmp_path), slices=2)
    assert [s.name for s in dataset.series] == ["attack_0", "attack_1"]
    first = dataset.series[0]
    assert first.values.shape == (10, 2)  # the constant sensor and the empty column are dropped
    assert first.labels.tolist() == [0] * 8 + [1, 1]  # -1 (attack) -> 1
    assert dataset.series[1].labels.tolist()[:1] == [1]
    assert dataset.normal[0].shape == (20, 2)


def test_wadi_without_its_files_says_where_to_get_them(tmp_path):
    with pytest.raises(SeriesFormatError, match="iTrust"):
        read_wadi(tmp_path)


def test_series_record_validates_itself():
    with pytest.raises(SeriesFormatError, match="3 rows of values but 2 labels"):
        Series("x", np.zeros((3, 1), np.float32), np.zeros(2, np.int8))
    with pytest.raises(SeriesFormatError, match="row 2 holds NaN"):
        Series("x", np.array([[0.0], [np.nan]], np.float32), np.zeros(2, np.int8))


@pytest.mark.parametrize("layout", ["yahoo", "smd"])
def test_synthetic_data_reads_back_with_the_requested_anomaly_share(tmp_path, layout):
    spec = SynthSpec(series=3, min_length=400, max_length=500, dims=4, anomaly_rate=0.04)
    write_synthetic(tmp_path, layout, spec, seed=3)
    dataset = read_dataset(tmp_path, layout)
    assert len(dataset.series) == 3
    assert all(400 <= s.length <= 500 for s in dataset.series)
    assert dataset.series[0].dims == (1 if layout == "yahoo" else 4)
    for series in dataset.series:
        assert series.labels.mean() == pytest.approx(0.04, abs=0.03)  # whole anomalies: the share is approximate
        assert not series.labels[:30].any()  # never inside the first, unclassified window
    if layout == "smd":
        assert len(dataset.normal) == 3 and all(not np.isnan(n).any() for n in dataset.normal)


def test_synthetic_data_is_seeded(tmp_path):
    spec = SynthSpec(series=2, min_length=200, max_length=300, dims=1, anomaly_rate=0.03)
    first = write_synthetic(tmp_path / "a", "yahoo", spec, seed=5)
    second = write_synthetic(tmp_path / "b", "yahoo", spec, seed=5)
    third = write_synthetic(tmp_path / "c", "yahoo", spec, seed=6)
    assert [p.read_bytes() for p in first] == [p.read_bytes() for p in second]
    assert [p.read_bytes() for p in first] != [p.read_bytes() for p in third]


def test_synthetic_writer_refuses_bad_lengths(tmp_path):
    with pytest.raises(ValueError, match="length range 500..400 is invalid"):
        write_synthetic(tmp_path, "yahoo", SynthSpec(1, 500, 400, 1, 0.01), seed=0)


FORBIDDEN_NAMES = re.compile(
    r"(?:^|/)(?:real_\d+\.csv|synthetic_\d+\.csv|A[1-4]Benchmark|ydata-labeled|WADI|"
    r"machine-\d+-\d+\.txt|normal-data/)",
    re.IGNORECASE,
)
FORBIDDEN_HEADERS = ("timestamp,value,is_anomaly", "timestamps,value,anomaly", WADI_LABEL)


def repository_files() -> list[str]:
    """Files git tracks, plus untracked ones it does not ignore (what a commit could pick up)."""
    done = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip("not a git checkout: cannot list the repository's files")
    return done.stdout.splitlines()


def test_no_yahoo_wadi_or_smd_data_file_is_in_the_repository():
    files = repository_files()
    assert not [f for f in files if FORBIDDEN_NAMES.search(f)], "benchmark data files must stay out of the repo"
    offending = []
    for name in files:
        path = REPO_ROOT / name
        if path.suffix.lower() in (".csv", ".txt") and path.is_file():
            head = path.read_text(encoding="utf-8", errors="replace")[:400]
            offending += [name for header in FORBIDDEN_HEADERS if header in head]
    assert not offending, f"files with a Yahoo/WaDi header: {offending}"


def real_folder(variable: str) -> Path:
    value = os.environ.get(variable, "").strip()
    if not value:
        pytest.skip(f"{variable} is unset: point it at your own copy (Yahoo and WaDi may not be redistributed)")
    if not Path(value).is_dir():
        pytest.skip(f"{variable}={value} is not a folder")
    return Path(value)


@pytest.mark.realdata
def test_real_yahoo_a1_has_the_published_shape():
    dataset = read_yahoo(real_folder("RATIONANOMALY_YAHOO_A1"))
    assert len(dataset.series) == 67
    assert sum(s.length for s in dataset.series) == 94_866
    assert sum(int(s.labels.sum()) for s in dataset.series) / 94_866 == pytest.approx(0.0176, abs=5e-4)


@pytest.mark.realdata
def test_real_smd_has_28_machines_of_38_metrics():
    dataset = read_smd(real_folder("RATIONANOMALY_SMD"))
    assert len(dataset.series) == 28 and dataset.series[0].dims == 38
    assert sum(s.length for s in dataset.series) == 708_420


@pytest.mark.realdata
def test_real_wadi_reads():
    dataset = read_wadi(real_folder("RATIONANOMALY_WADI"))
    assert len(dataset.series) == 5 and 0 < sum(int(s.labels.sum()) for s in dataset.series)
