"""Discriminator encoding, persistence, data readers, metrics and a tiny training run."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from rolecraft.discriminators import WEIGHTS_FILE, Discriminator, compute_dtype, reply_windows, shipped_dir
from rolecraft.errors import RolecraftError
from rolecraft.train.discriminators import (
    TrainConfig,
    nli_metrics,
    read_examples,
    relevance_metrics,
    roc_auc,
    train,
)

ROWS = [
    {
        "character": "Alice",
        "statement": "Alice plays the guitar.",
        "query": "What do you play?",
        "response": "I play the guitar every day.",
    },
    {
        "character": None,
        "statement": "I live in Paris.",
        "query": "Where do you live?",
        "response": "I live in Rome.",
    },
    {"statement": "Bob is a chef.", "query": "", "response": "Bob cooks for a living in a busy restaurant."},
]


@pytest.fixture(scope="module")
def relevance_model() -> Discriminator:
    return Discriminator.pretrained("relevance", dtype="float32")


@pytest.fixture(scope="module")
def nli_model() -> Discriminator:
    return Discriminator.pretrained("nli", dtype="float32")


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_shipped_folders_hold_only_small_deltas() -> None:
    total = 0
    for task in ("relevance", "nli"):
        folder = shipped_dir(task)
        config = json.loads((folder / "config.json").read_text())
        assert config["task"] == task and config["labels"]
        assert (folder / "training.json").is_file()
        total += sum(f.stat().st_size for f in folder.iterdir())
    assert total < 5_000_000  # no copy of the 90 MB base encoder


def test_labels_come_from_config(relevance_model: Discriminator, nli_model: Discriminator) -> None:
    assert relevance_model.labels == ["irrelevant", "relevant"]
    assert nli_model.labels == ["entailed", "neutral", "contradicted"]


def test_predict_proba_shape_and_batch_independence(nli_model: Discriminator) -> None:
    big = nli_model.predict_proba(ROWS, batch_size=64)
    small = nli_model.predict_proba(ROWS, batch_size=1)
    assert big.shape == (3, 3)
    np.testing.assert_allclose(big.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(big, small, atol=1e-4)
    assert nli_model.predict_proba([]).shape == (0, 3)


def test_truncation_keeps_reply_start(nli_model: Discriminator) -> None:
    row = {"statement": "long " * 400, "query": "why " * 300, "response": "unique reply words " + "x " * 50}
    ((ids, types),) = nli_model.encode([row])
    assert len(ids) == len(types) <= nli_model.config.max_length
    assert "unique reply words" in nli_model.tokenizer.decode(ids)


def test_save_load_round_trip(relevance_model: Discriminator, tmp_path: Path) -> None:
    rows = [{"statement": r["statement"], "query": r["query"]} for r in ROWS]
    before = relevance_model.predict_proba(rows)
    relevance_model.save(tmp_path / "copy")
    again = Discriminator.load(tmp_path / "copy")
    np.testing.assert_allclose(again.predict_proba(rows), before, atol=1e-5)
    assert (tmp_path / "copy" / WEIGHTS_FILE).stat().st_size < 3_000_000


def test_bfloat16_inference_tracks_float32(nli_model: Discriminator) -> None:
    fast = Discriminator.pretrained("nli", dtype="bfloat16")
    assert fast.dtype == torch.bfloat16 and fast.frozen and nli_model.dtype == torch.float32
    exact, quick = nli_model.predict_proba(ROWS), fast.predict_proba(ROWS)
    np.testing.assert_allclose(quick, exact, atol=0.05)
    assert (quick.argmax(axis=1) == exact.argmax(axis=1)).all()
    assert quick.dtype == np.float32  # the head still runs in float32
    with pytest.raises(RolecraftError, match="inference only"):
        fast.load_trainable_state(fast.trainable_state())


def test_reply_windows_are_the_reply_and_its_sentences() -> None:
    assert reply_windows("I live in Chireiden!") == ["I live in Chireiden!"]
    reply = 'Oh! I play the violin, not the guitar. "My sister?" She lives in Rome... Mr. Hart knows her.'
    assert reply_windows(reply) == [
        reply,
        "Oh! I play the violin, not the guitar.",
        '"My sister?"',
        "She lives in Rome...",
        "Mr. Hart knows her.",
    ]
    chinese = "我住在地灵殿。我有一个姐姐！好。"
    assert reply_windows(chinese) == [chinese, "我住在地灵殿。", "我有一个姐姐！好。"]


def test_long_replies_are_judged_by_their_strongest_sentence(nli_model: Discriminator) -> None:
    row = {
        "character": "Alice",
        "statement": "Alice plays the guitar.",
        "query": "What do you play?",
        "response": "The weather is lovely today. I play the violin, never the guitar.",
    }
    windows = reply_windows(row["response"])
    assert len(windows) == 3
    config = nli_model.config
    shipped = (config.nli_reply_windows, config.calibration_weights)
    try:
        config.calibration_weights = None  # the rule combines the probabilities before any calibration
        config.nli_reply_windows = True
        (joined,) = nli_model.predict_proba([row])
        config.nli_reply_windows = False
        parts = nli_model.predict_proba([{**row, "response": w} for w in windows])
    finally:
        config.nli_reply_windows, config.calibration_weights = shipped
    con = parts[:, 2].max()
    ent = min(parts[:, 0].max(), 1 - con)  # contradiction first: agreement elsewhere cannot outweigh it
    np.testing.assert_allclose(joined, [ent, 1 - ent - con, con], atol=1e-5)


TOPICS = [
    ("Alice keeps a grey cat called Pilot.", "Do you have any pets?"),
    ("Alice grew up in a small fishing town.", "Where did you grow up?"),
    ("Alice plays the guitar in a folk band.", "What instrument do you play?"),
    ("Alice is afraid of deep water.", "What scares you the most?"),
    ("Alice studied chemistry at university.", "What did you study?"),
    ("Alice drinks black tea every evening.", "What do you like to drink?"),
]


def test_relevance_fusion_is_fitted_saved_and_used(tmp_path: Path) -> None:
    model = Discriminator.pretrained("relevance", dtype="float32")
    rows, labels = [], []
    for i, (statement, _) in enumerate(TOPICS):
        for j, (_, query) in enumerate(TOPICS):
            rows.append({"character": "Alice", "statement": statement, "query": query})
            labels.append("relevant" if i == j else "irrelevant")
    raw = model.predict_proba(rows)[:, 1]
    weights = model.fit_fusion(rows, labels)
    assert weights["cosine_weight"] > 0  # on-topic pairs are closer in embedding space
    fused = model.predict_proba(rows)[:, 1]
    assert not np.allclose(fused, raw) and ((fused > 0) & (fused < 1)).all()
    positives = np.array(labels) == "relevant"
    assert fused[positives].mean() > fused[~positives].mean()
    model.save(tmp_path / "fused")
    again = Discriminator.load(tmp_path / "fused")
    assert again.config.cosine_weight == pytest.approx(weights["cosine_weight"])
    np.testing.assert_allclose(again.predict_proba(rows)[:, 1], fused, atol=1e-3)
    with pytest.raises(RolecraftError, match="both relevant and irrelevant"):
        model.fit_fusion(rows[:3], ["irrelevant"] * 3)


def test_only_relevance_fuses(nli_model: Discriminator) -> None:
    with pytest.raises(RolecraftError, match="Only a relevance"):
        nli_model.fit_fusion(ROWS, ["relevant", "irrelevant", "relevant"])
    with pytest.raises(RolecraftError, match="Only a relevance"):
        nli_model.rank(["Alice plays the guitar."], "What do you play?")


KOISHI_REPLIES = {
    ("Koishi lives in Chireiden.", "Where do you live?"): (
        "I live in Chireiden with my sister.", "I live in Hakurei Shrine!", "I like green tea."
    ),
    ("Koishi has a sister named Satori.", "Do you have siblings?"): (
        "Yes, my sister Satori.", "No, I am an only child.", "I like to wander around."
    ),
    ("Koishi is a satori youkai.", "What are you?"): (
        "I'm a satori youkai, of course!", "I am a human girl from the village.", "The weather is nice today."
    ),
}
KOISHI_NLI = [
    {"character": "Komeiji Koishi", "statement": statement, "query": query, "response": reply}
    for (statement, query), replies in KOISHI_REPLIES.items()
    for reply in replies
]


def test_nli_calibration_is_fitted_saved_and_used(tmp_path: Path) -> None:
    model = Discriminator.pretrained("nli", dtype="float32")
    model.config.calibration_weights = model.config.calibration_bias = None
    raw = model.predict_proba(KOISHI_NLI)
    # The identity calibration gives back the probabilities (up to the 1e-4 floor of the logs).
    model.config.calibration_weights, model.config.calibration_bias = np.eye(3).tolist(), [0.0, 0.0, 0.0]
    np.testing.assert_allclose(model.predict_proba(KOISHI_NLI), raw, atol=1e-3)
    # Labels that exchange "entailed" and "contradicted": the calibration must learn the exchange.
    predicted = raw.argmax(axis=1)
    assert set(predicted.tolist()) == {0, 1, 2}, "the rows should cover every label before calibration"
    exchanged = [model.labels[{0: 2, 1: 1, 2: 0}[int(i)]] for i in predicted]
    fitted = model.fit_calibration(KOISHI_NLI, exchanged)
    assert fitted["rows"] == len(KOISHI_NLI) and np.shape(fitted["weights"]) == (3, 3)
    calibrated = model.predict_proba(KOISHI_NLI)
    assert [model.labels[i] for i in calibrated.argmax(axis=1)] == exchanged
    np.testing.assert_allclose(calibrated.sum(axis=1), 1.0, atol=1e-5)
    model.save(tmp_path / "calibrated")
    again = Discriminator.load(tmp_path / "calibrated")
    np.testing.assert_allclose(again.predict_proba(KOISHI_NLI), calibrated, atol=1e-3)
    with pytest.raises(RolecraftError, match="every label"):
        model.fit_calibration(KOISHI_NLI[:2], ["entailed", "neutral"])


def test_only_nli_is_calibrated(relevance_model: Discriminator, tmp_path: Path) -> None:
    with pytest.raises(RolecraftError, match="Only an NLI"):
        relevance_model.fit_calibration(ROWS, ["relevant", "irrelevant", "relevant"])
    with pytest.raises(RolecraftError, match="calibration_files only applies"):
        TrainConfig(task="relevance", train_files=["x.jsonl"], output_dir="out", calibration_files=["y.jsonl"])
    # Calibration rows without a contradiction stop the run before it trains (nothing is written).
    rows = [{**row, "label": label} for row, label in zip(ROWS, ["entailed", "neutral", "entailed"], strict=True)]
    data = write_jsonl(tmp_path / "rows.jsonl", rows)
    config = TrainConfig(task="nli", train_files=[data], output_dir=tmp_path / "out", calibration_files=[data])
    with pytest.raises(RolecraftError, match="every NLI label"):
        train(config)
    assert not (tmp_path / "out").exists()


def test_dtype_choice() -> None:
    assert compute_dtype("cpu", "float32") == torch.float32
    assert compute_dtype("cpu", "bfloat16") == torch.bfloat16
    assert compute_dtype("cpu", "auto") in (torch.float32, torch.bfloat16)
    with pytest.raises(RolecraftError, match="Unknown dtype"):
        compute_dtype("cpu", "int4")


def test_load_missing_folder_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(RolecraftError, match="not a discriminator folder"):
        Discriminator.load(tmp_path)


def test_readers_accept_native_and_canonical_formats(tmp_path: Path) -> None:
    nli = write_jsonl(
        tmp_path / "pairs.jsonl",
        [
            {
                "premise": "A dog runs.",
                "hypothesis": "An animal moves.",
                "label": "entailment",
                "source": "snli",
            },
            {
                "premise": "A dog runs.",
                "hypothesis": "A cat sleeps.",
                "label": "not_entailment",
                "source": "rte",
            },
            {
                "id": "1",
                "character": "Al",
                "statement": "Al is tall.",
                "query": "Tall?",
                "response": "No, short.",
                "labels": ["contradicted", "neutral"],
            },
        ],
    )
    rows = read_examples(nli, "nli")
    assert [(e.statement, e.response, e.label) for e in rows] == [
        ("An animal moves.", "A dog runs.", "entailed"),  # the reply (premise) entails the statement
        ("Al is tall.", "No, short.", "contradicted"),  # first of the disagreeing labels
    ]  # the two-way row is skipped
    old_order = read_examples(nli, "nli", premise_as="statement")
    assert (old_order[0].statement, old_order[0].response) == ("A dog runs.", "An animal moves.")
    # A pair is held out (or not) whichever slot its premise fills.
    assert old_order[0].stable_fraction() == rows[0].stable_fraction()
    with pytest.raises(RolecraftError, match="premise_as"):
        read_examples(nli, "nli", premise_as="both")
    rel = write_jsonl(
        tmp_path / "rel.jsonl",
        [
            {"fact": "Paris is in France.", "question": "Where is Paris?", "label": 1},
            {"statement": "Al is tall.", "query": "Hi", "label": "no"},
            {"statement": "Al is tall.", "query": "How tall?", "relevant": "yes"},
        ],
    )
    assert [e.label for e in read_examples(rel, "relevance")] == ["relevant", "irrelevant", "relevant"]


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"statement": "s", "label": "entailed", "response": "r"}, "missing field 'query'"),
        ({"statement": "s", "query": "q", "response": "r", "label": "maybe"}, "unknown label 'maybe'"),
    ],
)
def test_bad_rows_name_file_and_line(tmp_path: Path, row: dict, message: str) -> None:
    good = {"statement": "s", "query": "q", "response": "r", "label": "neutral"}
    path = write_jsonl(tmp_path / "bad.jsonl", [good, row])
    with pytest.raises(RolecraftError, match=message) as info:
        read_examples(path, "nli")
    assert "bad.jsonl, line 2" in str(info.value)


def test_metrics() -> None:
    assert roc_auc([0.1, 0.4, 0.35, 0.8], [False, False, True, True]) == pytest.approx(0.75)
    assert roc_auc([0.5, 0.5], [False, True]) == pytest.approx(0.5)
    rel = relevance_metrics([0.9, 0.2, 0.6], ["relevant", "irrelevant", "irrelevant"])
    assert rel["accuracy"] == pytest.approx(2 / 3) and rel["roc_auc"] == pytest.approx(1.0)
    labels = ["entailed", "neutral", "contradicted"]
    proba = np.eye(3)[[0, 1, 2, 1]]
    nli = nli_metrics(proba, ["entailed", "neutral", "contradicted", "contradicted"], labels)
    assert nli["accuracy"] == pytest.approx(0.75)
    assert nli["confusion"] == [[1, 0, 0], [0, 1, 0], [0, 1, 1]]
    assert nli["macro_f1"] == pytest.approx((1 + 2 / 3 + 2 / 3) / 3)


def test_tiny_training_run_writes_a_loadable_model(tmp_path: Path) -> None:
    labels = ["entailed", "neutral", "contradicted"]
    rows = [
        {
            "id": str(i),
            "character": "Bo",
            "statement": f"Bo owns {i} cats.",
            "query": "Pets?",
            "response": f"I have {i if i % 3 == 0 else i + 1} cats.",
            "label": labels[i % 3],
        }
        for i in range(32)
    ]
    data = write_jsonl(tmp_path / "train.jsonl", rows)
    config = TrainConfig(
        task="nli",
        train_files=[data],
        output_dir=tmp_path / "model",
        batch_size=8,
        max_steps=2,
        eval_every=1,
        dev_fraction=0.25,
        seed=1,
    )
    metrics = train(config)
    assert metrics["steps"] == 2
    saved = json.loads((tmp_path / "model" / "metrics.json").read_text())
    assert saved["dev"]["n"] == 8
    assert saved["calibration"] is None
    assert json.loads((tmp_path / "model" / "training.json").read_text())["sources"]["train"]["rows"] == 32
    model = Discriminator.load(tmp_path / "model")
    assert model.predict_proba(rows[:2]).shape == (2, 3)

    # A second stage from that model, calibrated on rows of another file.
    calibration = write_jsonl(tmp_path / "calibration.jsonl", [{**r, "source": "held"} for r in rows[:12]])
    metrics = train(replace(config, init_from=tmp_path / "model", output_dir=tmp_path / "calibrated",
                            calibration_files=[calibration]))  # fmt: skip
    assert metrics["calibration"]["rows"] == 12
    assert metrics["calibration"]["dev_macro_f1_after"] is not None
    record = json.loads((tmp_path / "calibrated" / "training.json").read_text())
    assert record["calibration_sources"]["held"]["rows"] == 12
    assert Discriminator.load(tmp_path / "calibrated").config.calibration_weights is not None
    # Training on from a calibrated model drops the calibration: it belonged to the old weights.
    train(replace(config, init_from=tmp_path / "calibrated", output_dir=tmp_path / "again"))
    assert Discriminator.load(tmp_path / "again").config.calibration_weights is None
