"""Key sequences: the DeepLog format and its errors, the vocabulary and framing, and grouping loghub logs (HDFS
blocks, LogGPT's 60 s / 30 s windows, 100-line windows), on hand-made logs and on loghub's 2k samples."""

from __future__ import annotations

import json
import random
import subprocess
import sys

import pandas as pd
import pytest

from rationanomaly.loaders import DataFormatError
from rationanomaly.nextkey.__main__ import main
from rationanomaly.nextkey.keys import (
    BOS_ID,
    EOS_ID,
    UNK_ID,
    WINDOW,
    KeyVocabulary,
    SequenceFormatError,
    build_vocabulary,
    default_top_k,
    format_sequences,
    read_sequences,
    write_sequences,
)
from rationanomaly.nextkey.sequences import (
    assign_keys,
    build_sequences,
    cut_long,
    group_blocks,
    split_normal,
    time_windows,
)

STRUCTURED_HEADER = "LineId,Label,Timestamp,Content,EventId,EventTemplate\n"


def _write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def test_deeplog_files_round_trip_and_skip_blank_lines(tmp_path):
    path = _write(tmp_path / "seq", "5 5 22 11 \n\n3 4\n")  # DeepLog's trailing space, a blank line
    assert read_sequences(path) == [(5, 5, 22, 11), (3, 4)]
    write_sequences(tmp_path / "copy", read_sequences(path))
    assert (tmp_path / "copy").read_text() == "5 5 22 11\n3 4\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "holds no sequence"),  # empty file
        ("\n  \n", "holds no sequence"),  # only blank lines
        ("1 2 3\n4 E5 6\n", "line 2: key 'E5' is not a non-negative integer"),  # a loghub event id, not a number
        ("1 -2\n", "line 1: key '-2'"),  # negative key
        ("1 2.0\n", "key '2.0'"),  # a float
    ],
)
def test_bad_sequence_files_give_one_line_naming_file_and_line(tmp_path, text, message):
    path = _write(tmp_path / "bad", text)
    with pytest.raises(SequenceFormatError, match=message) as error:
        read_sequences(path)
    assert str(path) in str(error.value) and "\n" not in str(error.value)


def test_writing_an_empty_sequence_is_refused():
    with pytest.raises(ValueError, match="sequence 1 is empty"):
        format_sequences([(1,), ()])


def test_vocabulary_frames_sessions_and_windows_and_maps_unseen_keys_to_unk():
    vocab = build_vocabulary([(5, 3), (3, 9)])
    assert vocab.keys == (3, 5, 9)
    assert vocab.encode((9, 4, 3)) == [BOS_ID, 6, UNK_ID, 4, EOS_ID]  # keys start after the 4 specials
    assert vocab.candidate_ids() == [EOS_ID, 4, 5, 6]  # the end is a candidate for sessions
    assert vocab.first_scored == 1
    window = KeyVocabulary(vocab.keys, WINDOW)
    assert window.encode((9, 4, 3)) == [BOS_ID, 6, UNK_ID, 4]  # no end, first key not scored
    assert (window.candidate_ids(), window.first_scored) == ([4, 5, 6], 2)
    assert vocab.unknown_share([(9, 4, 3), (1,)]) == pytest.approx(0.5)
    assert KeyVocabulary.from_dict(window.to_dict()) == window


@pytest.mark.parametrize(
    ("keys", "limit", "expected"),
    [
        (28, 7, 7),  # HDFS: LogGPT's 7
        (5, 7, 4),  # few keys: floor(0.95 * 5)
        (1, 7, 1),  # never below 1
        (1000, 690, 690),  # Thunderbird
    ],
)
def test_default_top_k_is_loggpts_rule(keys, limit, expected):
    assert default_top_k(keys, limit) == expected


def test_assign_keys_keeps_loghub_numbers_and_numbers_other_ids_after_them():
    assert assign_keys(["E5", "E22", "E5"]) == {"E5": 5, "E22": 22}
    assert assign_keys(["E2", "dc2c74b7", "E3", "x"]) == {"E2": 2, "E3": 3, "dc2c74b7": 4, "x": 5}
    assert assign_keys(["E9", "E1"], known={"E1": 7}) == {"E1": 7, "E9": 9}  # a reused map wins


def test_group_blocks_follows_every_block_a_line_names_once():
    contents = ["Receiving blk_1 src", "blk_-2 and blk_1 and blk_1", "nothing", "Deleting blk_-2"]
    assert group_blocks(contents, [1, 2, 3, 4]) == {"blk_1": [1, 2], "blk_-2": [2, 4]}


def _brute_force_windows(times, window, step):
    """The rule read literally: starts from the first time in steps while before the last; [s, s + window]."""
    starts, start = [], times[0]
    while start < times[-1]:
        starts.append(start)
        start += step
    members = [[i for i, t in enumerate(times) if s <= t <= s + window] for s in starts]
    return [(m[0], m[-1] + 1) for m in members if len(m) > 1]


def test_time_windows_equal_a_brute_force_count():
    rng = random.Random(3)
    times = sorted(rng.randint(0, 600) for _ in range(150))
    assert time_windows(times, 60, 30) == _brute_force_windows(times, 60, 30)
    assert time_windows([5, 5, 5], 60, 30) == []  # every line at one instant: no window starts before the end
    # both ends inclusive, as LogGPT's .loc; starts 30 and 60 hold the same two lines and both windows are kept
    assert time_windows([0, 60, 61], 60, 30) == [(0, 2), (1, 3), (1, 3)]


def test_long_windows_are_cut_into_pieces_of_at_most_max_len():
    assert cut_long(10, 21, 4) == [(10, 14), (14, 18), (18, 21)]
    assert cut_long(0, 9, 4) == [(0, 4), (4, 8)]  # a one-line remainder is dropped, as a one-line window is


def test_split_normal_is_seeded_and_keeps_everything():
    normal = [(i,) for i in range(10)]
    train, test = split_normal(normal, 7, seed=1)
    assert (len(train), len(test)) == (7, 3) and sorted(train + test) == normal
    assert split_normal(normal, 7, seed=1) == (train, test)
    with pytest.raises(ValueError, match="train_size=10"):
        split_normal(normal, 10, 0)


def test_time_grouping_writes_labelled_deeplog_files_and_key_table(tmp_path):
    rows = [(1, "-", 0, "E3"), (2, "-", 10, "E4"), (3, "APPREAD", 50, "E9"), (4, "-", 100, "E3"), (5, "-", 130, "E4")]
    log = _write(
        tmp_path / "log.csv",
        STRUCTURED_HEADER + "".join(f"{i},{label},{t},text {e},{e},template {e}\n" for i, label, t, e in rows),
    )
    meta = build_sequences(log, tmp_path / "out", "time")
    # starts 0, 30, 60, 90 (< 130): [0,60] lines 1-3 abnormal, [30,90] line 3 only (dropped), [60,120] line 4 only,
    # [90,150] lines 4-5
    assert read_sequences(tmp_path / "out" / "abnormal") == [(3, 4, 9)]
    assert read_sequences(tmp_path / "out" / "normal") == [(3, 4)]
    assert (meta["sequences"], meta["normal"], meta["abnormal"], meta["keys"]) == (2, 1, 1, 3)
    keys = json.loads((tmp_path / "out" / "keys.json").read_text())["keys"]
    assert keys[0] == {"key": 3, "event_id": "E3", "template": "template E3", "lines": 2}


def test_block_grouping_without_labels_writes_unlabelled_and_with_labels_splits(tmp_path):
    log = _write(
        tmp_path / "hdfs.csv",
        "LineId,Content,EventId,EventTemplate\n"
        "1,Receiving blk_1,E5,Receiving <*>\n2,Receiving blk_2,E5,Receiving <*>\n"
        "3,Deleting blk_1,E9,Deleting <*>\n",
    )
    meta = build_sequences(log, tmp_path / "plain", "block")
    assert meta["unlabelled"] == 2 and read_sequences(tmp_path / "plain" / "unlabelled") == [(5, 9), (5,)]
    labels = _write(tmp_path / "anomaly_label.csv", "BlockId,Label\nblk_1,Normal\nblk_2,Anomaly\n")
    build_sequences(log, tmp_path / "labelled", "block", labels=labels)
    assert read_sequences(tmp_path / "labelled" / "normal") == [(5, 9)]
    assert read_sequences(tmp_path / "labelled" / "abnormal") == [(5,)]


def test_a_reused_key_map_numbers_a_second_log_like_the_first(tmp_path):
    first = _write(tmp_path / "a.csv", STRUCTURED_HEADER + "1,-,0,x,a1,t\n2,-,1,y,b2,u\n")
    second = _write(tmp_path / "b.csv", STRUCTURED_HEADER + "1,-,0,y,b2,u\n2,-,1,z,c3,v\n")
    build_sequences(first, tmp_path / "one", "time")
    build_sequences(second, tmp_path / "two", "time", key_map=tmp_path / "one" / "keys.json")
    assert read_sequences(tmp_path / "one" / "normal") == [(1, 2)]
    assert read_sequences(tmp_path / "two" / "normal") == [(2, 3)]


def test_sequences_cli_reports_a_log_without_blocks_in_one_line(tmp_path, capsys):
    log = _write(tmp_path / "log.csv", STRUCTURED_HEADER + "1,-,0,no block here,E1,t\n")
    assert main(["sequences", "--input", str(log), "--grouping", "block", "--output_dir", str(tmp_path)]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and "no line names a blk_ id" in error and error.count("\n") == 1


def test_time_windows_need_integer_timestamps(tmp_path):
    log = _write(tmp_path / "log.csv", STRUCTURED_HEADER + "1,-,soon,x,E1,t\n")
    with pytest.raises(DataFormatError, match="row 2 has Timestamp 'soon'"):
        build_sequences(log, tmp_path / "out", "time")


@pytest.mark.realdata
def test_bgl_2k_time_windows_against_100_line_windows(public_data, tmp_path):
    structured = public_data / "loghub" / "BGL_2k.log_structured.csv"
    meta = build_sequences(structured, tmp_path / "time", "time")
    # 60 s windows sliding by 30 s with more than one line: 831, of which 42 hold an alert (the Timestamp column;
    # BGL's Time column gives the same windows)
    assert (meta["sequences"], meta["abnormal"], meta["normal"]) == (831, 42, 789)
    assert (
        sum(len(s) for s in read_sequences(tmp_path / "time" / "normal"))
        + sum(len(s) for s in read_sequences(tmp_path / "time" / "abnormal"))
        == 2122
    )  # lines shared by overlaps
    # LogGPT's own conversion under pandas 2 turns BGL's Time into kiloseconds (microseconds // 1e9), so its "60 s"
    # windows span 60 ks: 283 windows, 59 abnormal, the numbers the notes measured
    frame = pd.read_csv(structured, dtype=str, keep_default_na=False)
    seconds = pd.to_datetime(frame["Time"], format="%Y-%m-%d-%H.%M.%S.%f").astype("datetime64[s]").astype("int64")
    frame["Timestamp"] = (seconds // 1000).astype(str)
    frame.to_csv(tmp_path / "kiloseconds.csv", index=False)
    kilo = build_sequences(tmp_path / "kiloseconds.csv", tmp_path / "kilo", "time")
    assert (kilo["sequences"], kilo["abnormal"]) == (283, 59)
    lines = build_sequences(structured, tmp_path / "lines", "lines")
    assert (lines["sequences"], lines["abnormal"]) == (20, 12)  # RationAnomaly's 100-line windows
    assert all(len(s) == 100 for s in read_sequences(tmp_path / "lines" / "normal"))


@pytest.mark.realdata
def test_hdfs_2k_blocks(public_data, tmp_path):
    meta = build_sequences(public_data / "loghub" / "HDFS_2k.log_structured.csv", tmp_path, "block")
    assert (meta["sequences"], meta["unlabelled"], meta["keys"]) == (2200, 2200, 14)


def test_key_files_and_sequences_need_neither_torch_nor_transformers():
    code = (
        "import sys, rationanomaly, rationanomaly.nextkey, rationanomaly.nextkey.keys, "
        "rationanomaly.nextkey.sequences, rationanomaly.nextkey.synthetic; "
        "print(sorted({'torch', 'transformers'} & set(sys.modules)))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
