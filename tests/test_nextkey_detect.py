"""Top-K detection: ranks, worst ranks, the n-gram floor, metrics equal to scikit-learn's, and the evaluate command
with its one-line errors."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rationanomaly.nextkey import sequences
from rationanomaly.nextkey.__main__ import main
from rationanomaly.nextkey.detect import (
    detection_metrics,
    evaluate_detector,
    model_worst_ranks,
    target_ranks,
    unseen_rank,
)
from rationanomaly.nextkey.keys import EOS_ID, MAX_POSITIONS, UNK_ID, build_vocabulary, write_sequences
from rationanomaly.nextkey.models import (
    GPT2,
    ModelFolderError,
    ModelShape,
    SequenceTooLongError,
    build_model,
    check_lengths,
    model_positions,
)
from rationanomaly.nextkey.ngram import fit_ngram, ngram_from_meta, save_ngram, train_ngram
from rationanomaly.nextkey.synthetic import write_synthetic
from rationanomaly.nextkey.train import TrainConfig, train

TINY = ModelShape(n_layer=1, n_head=2, n_embd=16, dropout=0.0, n_positions=64)

pytestmark = pytest.mark.usefixtures("one_cpu_thread")


def test_target_ranks_count_strictly_better_candidates_and_put_unk_beyond_every_k():
    logits = torch.tensor([[3.0, 1.0, 3.0, float("-inf"), 2.0]] * 4)
    targets = torch.tensor([0, 2, 4, UNK_ID])
    # ties do not push a key down: 0 and 2 share rank 1; 4 has two better; <unk> (3) gets the unseen rank
    assert target_ranks(logits, targets, unseen=99).tolist() == [1, 1, 3, 99]


class BigramTable(torch.nn.Module):
    """A stand-in causal LM whose next-token logits depend on the current token only (hand-checkable ranks)."""

    def __init__(self, table: torch.Tensor):
        super().__init__()
        self.table = torch.nn.Parameter(table)

    def forward(self, input_ids, attention_mask=None):
        return SimpleNamespace(logits=self.table[input_ids])


def test_worst_rank_of_a_sequence_is_its_least_expected_key():
    vocab = build_vocabulary([(1, 2, 3)])  # tokens: 4 -> key 1, 5 -> key 2, 6 -> key 3
    table = torch.zeros(7, 7)
    table[1] = torch.tensor([0, 0, 0, 0, 9, 1, 2.0])  # after <bos>: key 1, then 3, then 2, then <eos> (0)
    table[4] = torch.tensor([0, 0, 1, 0, 0, 9, 5.0])  # after key 1: key 2, key 3, <eos>, then key 1 (0)
    table[5] = torch.tensor([0, 0, 1, 0, 0, 0, 9.0])  # after key 2: key 3, then <eos>
    table[6] = torch.tensor([0, 0, 9, 0, 0, 0, 0.0])  # after key 3: <eos>
    model = BigramTable(table)
    worst = model_worst_ranks(model, vocab, [(1, 2, 3), (1, 3), (2,), (1, 1), (1, 7)], batch_size=2)
    # (1,2,3): ranks 1,1,1,1; (1,3): 1,2,1; (2,): 3, then <eos> after key 2 is 2nd; (1,1): key 1 after key 1 has
    # logit 0 behind 9, 5 and 1, so 4th; (1,7): 7 was never seen
    assert worst == [1, 2, 3, 4, unseen_rank(vocab)]


def test_window_framing_never_scores_the_first_key_or_an_end():
    vocab = build_vocabulary([(1, 2)], framing="window")
    table = torch.zeros(7, 7)
    table[4, 5] = 9.0  # after key 1, key 2 is expected
    table[5, 5] = 9.0  # after key 2, key 2 again
    assert model_worst_ranks(BigramTable(table[:6, :6]), vocab, [(2, 1), (1, 2), (1,)]) == [2, 1, 0]


@settings(max_examples=150, deadline=None)
@given(
    normal=st.lists(st.integers(0, 12), min_size=1, max_size=30),
    abnormal=st.lists(st.integers(0, 12), max_size=30),
    top_k=st.integers(1, 11),
)
def test_detection_metrics_equal_scikit_learn(normal, abnormal, top_k):
    metrics = pytest.importorskip("sklearn.metrics")
    truth = [0] * len(normal) + [1] * len(abnormal)
    predicted = [int(rank > top_k) for rank in normal + abnormal]
    ours = detection_metrics(normal, abnormal, top_k)
    precision, recall, f1, _ = metrics.precision_recall_fscore_support(
        truth, predicted, labels=[1], average=None, zero_division=0
    )
    assert (ours["precision"], ours["recall"], ours["f1"]) == pytest.approx((precision[0], recall[0], f1[0]), abs=1e-12)
    tn, fp, fn, tp = metrics.confusion_matrix(truth, predicted, labels=[0, 1]).ravel().tolist()
    assert (ours["tp"], ours["fp"], ours["fn"], ours["tn"]) == (tp, fp, fn, tn)
    assert ours["fpr"] == pytest.approx(fp / (fp + tn) if fp + tn else 0.0, abs=1e-12)
    assert ours["top_k"] == top_k


def test_ngram_ranks_follow_counts_with_backoff():
    vocab = build_vocabulary([(1, 2, 3), (1, 2, 4), (1, 2, 3)])
    model = fit_ngram([(1, 2, 3), (1, 2, 4), (1, 2, 3)], vocab, order=3)
    after_1_2 = model.rank_table([1, 4, 5])  # <bos> 1 2: 3 twice, 4 once, then backoff (unigram: 1, 2 thrice)
    assert [after_1_2[t] for t in (6, 7, 4, 5, EOS_ID)] == [1, 2, 3, 3, 3]
    assert model.worst_ranks([(1, 2, 3), (1, 2, 4), (2, 1), (9,)]) == [1, 2, 3, unseen_rank(vocab)]


def test_ngram_model_folder_round_trips(tmp_path):
    vocab = build_vocabulary([(1, 2, 3)])
    model = fit_ngram([(1, 2, 3), (2, 3)], vocab, order=2)
    save_ngram(model, tmp_path, {"top_k": 2})
    again = ngram_from_meta(json.loads((tmp_path / "nextkey.json").read_text()))
    assert again.counts == model.counts and again.vocab == vocab and again.order == 2


def _evaluate_argv(synthetic, output, *extra: str) -> list[str]:
    """`evaluate` on the synthetic model and files, writing `output`."""
    return [
        "evaluate",
        "--model",
        str(synthetic.model),
        "--normal",
        str(synthetic.normal),
        "--abnormal",
        str(synthetic.abnormal),
        "--output_json",
        str(output),
        *extra,
    ]


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """Synthetic normal/abnormal key files, a normal test file and a tiny pre-trained GPT-2 (seconds)."""
    folder = tmp_path_factory.mktemp("nextkey_synthetic")
    files = write_synthetic(folder, normal=160, abnormal=60, seed=0)
    write_synthetic(folder / "test", normal=60, abnormal=0, seed=1)
    config = TrainConfig(shape=TINY, pretrain_epochs=2, batch_size=32, top_k=2, lr=1e-2)
    train(files["normal"], folder / "model", config, progress=False)
    return SimpleNamespace(
        folder=folder,
        normal=folder / "test" / "normal",
        abnormal=files["abnormal"],
        train=files["normal"],
        model=folder / "model",
    )


def test_evaluate_cli_writes_the_metrics_the_issue_names(synthetic, tmp_path, capsys):
    output = tmp_path / "eval.json"
    assert main(_evaluate_argv(synthetic, output, "--top_k", "3")) == 0
    record = json.loads(output.read_text())
    assert {"precision", "recall", "f1", "fpr", "tp", "fp", "fn", "tn", "top_k"} <= set(record)
    assert (record["tp"] + record["fn"], record["fp"] + record["tn"], record["top_k"]) == (60, 60, 3)
    at_three = next(point for point in record["sweep"] if point["top_k"] == 3)
    assert {k: at_three[k] for k in ("tp", "fp", "fn", "tn")} == {k: record[k] for k in ("tp", "fp", "fn", "tn")}
    # every synthetic break with the error key 8 is unseen in training, hence flagged at any K
    assert record["with_unseen_key"]["abnormal"] > 0 and record["with_unseen_key"]["normal"] == 0
    assert "precision" in capsys.readouterr().out


def test_ngram_floor_through_the_cli_on_synthetic_breaks(synthetic, tmp_path, capsys):
    assert (
        main(
            [
                "train",
                "--train",
                str(synthetic.train),
                "--method",
                "ngram",
                "--output_dir",
                str(tmp_path / "ngram"),
                "--top_k",
                "4",
            ]
        )
        == 0
    )
    assert "3-gram on 160 sequences, K=4" in capsys.readouterr().out
    record = evaluate_detector(tmp_path / "ngram", synthetic.normal, synthetic.abnormal)
    # seeded data, so exact: at K=4 no normal session is flagged; the 26 breaks with the unseen error key and 13
    # others are caught, while a delete moved to the front still ranks within the 4 likeliest keys by backoff
    assert (record["fpr"], record["tp"], record["fn"], record["top_k"]) == (0.0, 39, 21, 4)
    assert record["with_unseen_key"] == {"normal": 0, "abnormal": 26}
    assert [point["recall"] for point in record["sweep"]][:2] == [1.0, 1.0]  # K = 1, 2 flag everything abnormal


def test_evaluating_a_model_of_another_vocabulary_is_one_clear_line(synthetic, tmp_path, capsys):
    other = tmp_path / "other"
    write_sequences(other, [(100 + i, 200 + i, 300) for i in range(20)])
    code = main(
        [
            "evaluate",
            "--model",
            str(synthetic.model),
            "--normal",
            str(other),
            "--abnormal",
            str(other),
            "--output_json",
            str(tmp_path / "x.json"),
        ]
    )
    error = capsys.readouterr().err
    assert code == 2 and "made for another key vocabulary" in error and error.count("\n") == 1


def test_training_from_a_model_of_another_vocabulary_is_refused(synthetic, tmp_path):
    other = tmp_path / "other"
    write_sequences(other, [(1, 2, 99)] * 10)  # key 99 is new to the model
    with pytest.raises(ModelFolderError, match="made for another key vocabulary"):
        train(other, tmp_path / "out", TrainConfig(method="logneo", shape=TINY), init=synthetic.model, progress=False)


@pytest.mark.parametrize(
    ("argv_tail", "message"),
    [
        (["--model", "{missing}"], "no such model folder"),  # not a folder
        (["--model", "{plain}"], "not a next-key model folder"),  # a folder without nextkey.json
        (["--top_k", "99"], "choose K between 1 and"),  # K beyond the candidates
    ],
)
def test_evaluate_errors_are_one_line(synthetic, tmp_path, capsys, argv_tail, message):
    (tmp_path / "plain").mkdir()
    argv = _evaluate_argv(synthetic, tmp_path / "e.json")
    argv += [a.format(missing=tmp_path / "missing", plain=tmp_path / "plain") for a in argv_tail]
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert message in error and error.count("\n") == 1


def test_empty_normal_file_is_one_line(synthetic, tmp_path, capsys):
    (tmp_path / "empty").write_text("")
    assert (
        main(
            [
                "evaluate",
                "--model",
                str(synthetic.model),
                "--normal",
                str(tmp_path / "empty"),
                "--abnormal",
                str(synthetic.abnormal),
                "--output_json",
                str(tmp_path / "e.json"),
            ]
        )
        == 2
    )
    assert "holds no sequence" in capsys.readouterr().err


def test_train_ngram_records_loggpts_k(tmp_path):
    write_sequences(tmp_path / "seq", [(1, 2, 3, 4, 5, 6, 7, 8, 9, 10)])
    assert train_ngram(tmp_path / "seq", tmp_path / "m")["top_k"] == 7  # min(floor(0.95 * 10), 7)


@pytest.mark.parametrize(
    ("framing", "keys", "fits"),
    [
        ("session", 510, True),  # <bos> 510 keys <eos> = 512 positions
        ("session", 511, False),  # 513 positions
        ("window", 511, True),  # <bos> 511 keys = 512
        ("window", 512, False),  # LogGPT's max_lens under <bos>: 513
    ],
)
def test_the_key_limit_is_the_models_positions_minus_the_framing_tokens(framing, keys, fits):
    vocab = build_vocabulary([(1, 2)], framing)
    if fits:
        check_lengths([(1,) * keys], vocab, MAX_POSITIONS, "f")
    else:
        with pytest.raises(SequenceTooLongError, match=rf"f: sequence 1 holds {keys} keys.*n_positions=512"):
            check_lengths([(1,) * keys], vocab, MAX_POSITIONS, "f")


def test_the_longest_default_sequence_runs_through_a_default_model_and_one_more_key_is_refused():
    vocab = build_vocabulary([(1, 2)])
    model = build_model(GPT2, vocab)  # LogGPT's default size: 512 positions
    assert model_positions(model) == MAX_POSITIONS and sequences.MAX_LEN == 510
    assert model_worst_ranks(model, vocab, [(1, 2) * (sequences.MAX_LEN // 2)])[0] >= 1
    with pytest.raises(SequenceTooLongError, match="sequence 2 holds 511 keys"):
        model_worst_ranks(model, vocab, [(1, 2), (1,) * 511])


def test_evaluating_a_sequence_longer_than_the_model_is_one_line_naming_the_file(synthetic, tmp_path, capsys):
    write_sequences(tmp_path / "long", [(1, 2, 3), tuple([1] * 63)])  # 65 tokens for a 64-position model
    argv = _evaluate_argv(synthetic, tmp_path / "e.json")
    argv[argv.index("--abnormal") + 1] = str(tmp_path / "long")
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert f"{tmp_path / 'long'}: sequence 2 holds 63 keys" in error and "n_positions=64" in error
    assert error.count("\n") == 1 and not (tmp_path / "e.json").exists()


def test_evaluate_with_k_zero_is_refused_instead_of_using_the_models_k(synthetic, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(_evaluate_argv(synthetic, tmp_path / "e.json", "--top_k", "0"))
    assert exit_info.value.code == 2 and "argument --top_k: 0 is not a positive integer" in capsys.readouterr().err
    with pytest.raises(ValueError, match="top_k=0"):  # the function refuses it too
        evaluate_detector(synthetic.model, synthetic.normal, synthetic.abnormal, top_k=0)
