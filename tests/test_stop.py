"""Stop-string handling and sampling settings shared by every backend (no model needed)."""

from __future__ import annotations

import dataclasses

import pytest

from rolecraft.llm.base import Sampling, StopStream, cut_at_stop, split_prefill


def run_stream(pieces: list[str], stop: list[str]) -> tuple[list[str], StopStream]:
    stream = StopStream(stop)
    out = [stream.feed(p) for p in pieces]
    out.append(stream.flush())
    return [o for o in out if o], stream


def test_cut_at_stop_takes_the_earliest_stop() -> None:
    assert cut_at_stop('Mira: hello" and more\nNext', ["\n", '"']) == ("Mira: hello", True)


def test_cut_at_stop_without_a_hit_keeps_everything() -> None:
    assert cut_at_stop("plain text", ["END", ""]) == ("plain text", False)
    assert cut_at_stop("plain text", []) == ("plain text", False)


def test_cut_at_stop_at_the_very_start_gives_empty_text() -> None:
    assert cut_at_stop('"quoted', ['"']) == ("", True)


def test_stop_stream_catches_a_stop_spread_over_pieces() -> None:
    out, stream = run_stream(["Hel", "lo <|e", "nd|> ignored", " more"], ["<|end|>"])
    assert "".join(out) == "Hello "
    assert stream.done


def test_stop_stream_releases_a_false_alarm() -> None:
    # "EN" looks like the start of "END" until the next piece proves otherwise.
    out, stream = run_stream(["abc E", "N", "x", "yz"], ["END"])
    assert "".join(out) == "abc ENxyz"
    assert not stream.done


def test_stop_stream_with_stops_of_different_lengths() -> None:
    out, _ = run_stream(["one two", '" three', "\n"], ["\n\n", '"'])
    assert "".join(out) == "one two"


def test_stop_stream_without_stops_passes_pieces_through() -> None:
    out, _ = run_stream(["a", "b", "c"], [])
    assert out == ["a", "b", "c"]


def test_stop_stream_ignores_pieces_after_the_stop() -> None:
    stream = StopStream(["."])
    assert stream.feed("Done. Then") == "Done"
    assert stream.feed("more text") == ""
    assert stream.flush() == ""


def test_sampling_with_replaces_fields_and_ignores_none() -> None:
    base = Sampling(temperature=0.7, max_new_tokens=200)
    changed = base.with_(temperature=0.0, max_new_tokens=None, seed=3)
    assert (changed.temperature, changed.max_new_tokens, changed.seed) == (0.0, 200, 3)
    assert base.temperature == 0.7  # the original is untouched


def test_sampling_with_normalizes_stop() -> None:
    assert Sampling().with_(stop='"').stop == ('"',)
    assert Sampling().with_(stop=["a", "b"]).stop == ("a", "b")


def test_sampling_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        Sampling().temperature = 1.0  # type: ignore[misc]


def test_split_prefill() -> None:
    convo = [{"role": "user", "content": "Hi"}]
    assert split_prefill(convo) == (convo, "")
    assert split_prefill([*convo, {"role": "assistant", "content": 'Mira: "'}]) == (convo, 'Mira: "')
