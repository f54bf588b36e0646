"""APC scoring with the shipped discriminators."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from rolecraft.apc import APCReport, APCScorer
from rolecraft.errors import RolecraftError

# The example of the APC paper's README (Komeiji Koishi).
KOISHI = "Komeiji Koishi"
STATEMENTS = ["Komeiji Koishi lives with her sister, Komeiji Satori.", "Komeiji Koishi lives in Chireiden."]
QUERY = "Where do you live, Koishi?"
REPLIES = [
    "I live in Chireiden with my sister, Satori!",
    "I live in Chireiden!",
    "I live in Hakurei Shrine!",
]


def test_contradicting_reply_scores_lowest(apc_scorer: APCScorer) -> None:
    scores = apc_scorer.score(STATEMENTS, QUERY, REPLIES, character=KOISHI)
    assert scores[1] > scores[2], scores  # "Chireiden" beats "Hakurei Shrine"
    assert scores[0] > scores[2], scores


def test_koishi_replies_rank_by_faithfulness(apc_scorer: APCScorer) -> None:
    scores = apc_scorer.score(STATEMENTS, QUERY, REPLIES, character=KOISHI)
    assert scores[0] > scores[1] > scores[2], scores


def test_short_faithful_reply_beats_a_contradicting_one(apc_scorer: APCScorer) -> None:
    # A candidate NLI model that was better on Alice's long replies failed this: it called the
    # short faithful reply contradicted by most of Mira's statements.
    from rolecraft.examples import load_example

    mira = load_example("mira")
    replies = ["Yes, my cat Barnacle sleeps by the lamp.", "I have a dog named Rex and I live in London."]
    for query in ("Do you have any pets?", "Tell me about yourself."):
        faithful, wrong = apc_scorer.score(mira.statement_texts, query, replies, character=mira.name)
        assert faithful > wrong, (query, faithful, wrong)


def test_report_fields_follow_the_formula(apc_scorer: APCScorer) -> None:
    reports = apc_scorer.report(STATEMENTS, QUERY, REPLIES, character=KOISHI)
    assert [r.response for r in reports] == REPLIES
    for report in reports:
        assert isinstance(report, APCReport) and len(report.rows) == len(STATEMENTS)
        for row, statement in zip(report.rows, STATEMENTS, strict=True):
            assert row.statement == statement
            assert row.p_entailed + row.p_neutral + row.p_contradicted == pytest.approx(1.0, abs=1e-5)
            expected = (1 - row.p_relevant) * (1 - row.p_contradicted) + row.p_relevant * row.p_entailed
            assert row.contribution == pytest.approx(expected, abs=1e-6)
            assert row.active == (row.p_relevant > 0.5)
        assert report.total == pytest.approx(sum(r.contribution for r in report.rows))
        assert report.mean == pytest.approx(report.total / len(STATEMENTS))
        assert json.loads(json.dumps(report.to_dict()))["rows"][0]["statement"] == STATEMENTS[0]
    # The same statement has the same relevance for every reply.
    assert {r.rows[1].p_relevant for r in reports} == {reports[0].rows[1].p_relevant}


def test_batched_equals_one_by_one(apc_scorer: APCScorer) -> None:
    batched = apc_scorer.score(STATEMENTS, QUERY, REPLIES, character=KOISHI)
    single = [apc_scorer.score(STATEMENTS, QUERY, [reply], character=KOISHI)[0] for reply in REPLIES]
    # bfloat16 kernels add up in a different order for each batch shape: equal to about 1e-3.
    tolerance = 1e-4 if apc_scorer.nli.dtype == torch.float32 else 1e-2
    assert batched == pytest.approx(single, abs=tolerance)


def test_relevance_runs_once_per_statement(apc_scorer: APCScorer, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = {"relevance": 0, "nli": 0}
    for name in seen:
        model = getattr(apc_scorer, name)
        original = model.forward

        def counting(*args, _original=original, _name=name, **kwargs):
            seen[_name] += kwargs["input_ids"].shape[0]
            return _original(*args, **kwargs)

        monkeypatch.setattr(model, "forward", counting)
    apc_scorer.score(STATEMENTS, QUERY, REPLIES)
    assert seen == {"relevance": len(STATEMENTS), "nli": len(STATEMENTS) * len(REPLIES)}


def test_rank_orders_by_relevance(apc_scorer: APCScorer) -> None:
    statements = ["Koishi likes roses.", *STATEMENTS, "Koishi's hat is black."]
    ranked = apc_scorer.rank(statements, QUERY, top_k=2, character=KOISHI)
    assert len(ranked) == 2 and ranked[0][1] >= ranked[1][1]
    assert {i for i, _ in ranked} <= set(range(len(statements)))
    assert {i for i, _ in ranked} == {1, 2}  # the two "lives ..." statements answer "where do you live"
    full = apc_scorer.rank(statements, QUERY, top_k=10)
    assert sorted(i for i, _ in full) == [0, 1, 2, 3]
    assert apc_scorer.rank(statements, QUERY, top_k=0) == []


def test_edge_cases_and_user_errors(apc_scorer: APCScorer) -> None:
    assert apc_scorer.score(STATEMENTS, QUERY, []) == []
    assert apc_scorer.report([], QUERY, ["Hi"])[0].total == 0.0
    with pytest.raises(RolecraftError, match="list of strings"):
        apc_scorer.score("Koishi lives in Chireiden.", QUERY, REPLIES)
    with pytest.raises(RolecraftError, match="relevance discriminator"):
        APCScorer(apc_scorer.nli, apc_scorer.relevance)


def test_lazy_export() -> None:
    import rolecraft

    assert rolecraft.APCScorer is APCScorer


@pytest.mark.slow
def test_shipped_models_keep_their_measured_alice_scores(apc_scorer: APCScorer, shared_data: Path) -> None:
    from rolecraft.train.discriminators import evaluate, read_examples

    alice = shared_data / "apc_alice"
    relevance = evaluate(apc_scorer.relevance, read_examples(alice / "Alice.relevance.json", "relevance"))
    nli = evaluate(apc_scorer.nli, read_examples(alice / "Alice.nli.v2.json", "nli"))
    # Floors just under what the shipped models reach (AUC 0.900 with the cosine fusion, macro-F1 0.759
    # with the calibration, in float32 and bfloat16 alike; the targets are AUC 0.90 / macro-F1 0.75).
    # The NLI model must also find most of the contradictions it finds now (14 of 29).
    assert relevance["roc_auc"] >= 0.89
    assert nli["macro_f1"] >= 0.74
    assert nli["confusion"][2][2] >= 12
