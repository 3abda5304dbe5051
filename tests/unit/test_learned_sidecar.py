"""Learned routing in the sidecar process: the real WordLlama embedding from its wheel, the builtin model,
the cost of a config that uses none of it (nothing: numpy is not even imported), and the
`modelroute router train|eval` commands on a small labeled file (deterministic: the same data, the same
sha256)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from tests.kube_harness import REPO

from modelroute_contract import (
    BUILTIN_DIFFICULTY_HEADS,
    BUILTIN_DIFFICULTY_SHA256,
    BUILTIN_DIFFICULTY_VERSION,
)
from modelroute_operator.runtime.cli import main as cli
from modelroute_sidecar.configstore import build_snapshot
from modelroute_sidecar.embeddings import builtin_document, builtin_sha256, embedder
from modelroute_sidecar.engine import RequestFeatures
from modelroute_sidecar.engine.difficulty import head_from_document

GOLDEN = REPO / "tests" / "unit" / "golden"


def test_the_packaged_builtin_is_the_one_the_contract_pins() -> None:
    assert builtin_sha256() == BUILTIN_DIFFICULTY_SHA256
    assert builtin_document()["version"] == BUILTIN_DIFFICULTY_VERSION
    assert len(json.dumps(builtin_document())) < 512 * 1024
    # Every older builtin a policy may have pinned is still carried, byte for byte.
    assert BUILTIN_DIFFICULTY_HEADS[BUILTIN_DIFFICULTY_VERSION] == BUILTIN_DIFFICULTY_SHA256
    for version, sha256 in BUILTIN_DIFFICULTY_HEADS.items():
        assert builtin_sha256(version) == sha256
        assert builtin_document(version)["version"] == version
    with pytest.raises(ValueError, match="no builtin difficulty model of version '1999'"):
        builtin_document("1999")


def test_the_embedder_is_wordllamas_own_embedding() -> None:
    import wordllama

    reference = wordllama.WordLlama.load(cache_dir=Path(wordllama.__file__).parent, disable_download=True)
    texts = ["Janet's ducks lay 16 eggs per day.", "Which of these is a prime?\nA. 4\nB. 7"]
    expected = reference.embed(texts, norm=True)
    for text, row in zip(texts, expected, strict=True):
        assert np.allclose(embedder().embed(text), row, atol=1e-6)
    assert not embedder().embed("").any()
    # The table is widened a slice at a time when it loads: every row, the last partial slice's too,
    # must hold WordLlama's own float32 values (the texts above reach only a few hundred of them).
    assert np.array_equal(embedder()._table, reference.embedding)


@pytest.mark.parametrize(
    "text",
    [
        "a  b",
        "  lead",
        "trail  ",
        "x \n  y\tz",
        " ",
        "",
        "naïve café 🙂",
        "Step 1.\n   Step 2.  ",
        # a word that itself starts with the tokenizer's space mark, after one space and after two
        "y \u2581y  y \u2581\u2581y   \u2581y",
    ],
)
def test_the_cached_word_tokens_are_the_tokenizers(text: str) -> None:
    tokenizer = embedder()._tokenizer
    assert embedder().token_ids(text) == tokenizer.encode(text, add_special_tokens=False).ids
    assert embedder().token_ids(text) == tokenizer.encode(text, add_special_tokens=False).ids  # cached


def test_long_words_are_tokenized_but_not_cached_and_the_cache_stays_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from modelroute_sidecar import embeddings

    tokenizer, words = embedder()._tokenizer, embedder()._words
    held = len(words)
    text = " ".join(f"{n:06d}" + "qz" * 20 for n in range(2000))  # 2,000 unique 46-character words
    assert embedder().token_ids(text) == tokenizer.encode(text, add_special_tokens=False).ids
    assert len(words) == held  # computed, not kept
    embedder().token_ids("routing models")
    assert {"routing", "models"} <= words.keys()  # short words still are (after one space: by the bare word)
    monkeypatch.setattr(embeddings, "_WORD_CACHE_MAX", 100)
    short = " ".join(f"w{n}" for n in range(1000))  # one prompt of more short words than the cache holds
    assert embedder().token_ids(short) == tokenizer.encode(short, add_special_tokens=False).ids
    assert len(words) + len(embedder()._spaced) <= 100


def test_a_config_without_learned_rules_imports_neither_numpy_nor_wordllama() -> None:
    script = f"""
import sys
from modelroute_sidecar.configstore import build_snapshot
build_snapshot(open({str(GOLDEN / "tiered-routing.json")!r}).read(), source="file", region="")
assert not {{"numpy", "tokenizers", "wordllama"}} & set(sys.modules), "loaded for nothing"
build_snapshot(open({str(GOLDEN / "learned-routing.json")!r}).read(), source="file", region="")
assert "numpy" in sys.modules and "tokenizers" in sys.modules
"""
    subprocess.run([sys.executable, "-c", script], check=True, cwd=REPO)


def test_the_builtin_model_routes_the_example() -> None:
    snapshot = build_snapshot((GOLDEN / "learned-routing.json").read_text(), source="file", region="")

    def decide(prompt: str):  # type: ignore[no-untyped-def]
        request = RequestFeatures("r", "chat", "learned", {}, {}, prompt, max(1, len(prompt) // 4))
        return snapshot.router.decide(request, _NoHealth(), seed=1)

    code = decide("Write a Python function that parses a CSV file and sums a column")
    assert (code.rule, code.semantic_route) == ("code", "code")
    chat = decide("Hi, how are you today?")
    assert (chat.rule, chat.semantic_route) == ("chitchat", "chitchat")
    question = (
        "Find the degree for the given field extension Q(sqrt(2), sqrt(3), sqrt(18)) over Q.\n"
        "A. 0\nB. 4\nC. 2\nD. 6\nAnswer:"
    )
    exam = decide(question)
    assert exam.complexity_scorer == "difficulty" and exam.rule in ("hard", "easy")
    assert exam.rule == ("hard" if exam.complexity >= 15 else "easy")
    assert decide(question).complexity == exam.complexity  # deterministic


class _NoHealth:
    def is_ejected(self, endpoint: str, replica: str) -> bool:
        return False

    def any_ejected(self) -> bool:
        return False

    def p95_ms(self, endpoint: str) -> float | None:
        return None


def labeled_file(path: Path) -> Path:
    data = path / "labeled.jsonl"
    lines = []
    for i in range(120):
        benchmark = "math" if i % 2 else "quiz"
        numbers = " ".join(str(n) for n in range(i % 7 + 1))
        lines.append(
            {
                "benchmark": benchmark,
                "subject": f"s{i % 3}",
                "prompt": f"{benchmark} {i}: how many apples if {numbers}?",
                "weak_correct": i % 7 < 4,
                "strong_correct": i % 11 != 0,
            }
        )
    data.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return data


def test_router_train_and_eval(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = labeled_file(tmp_path)
    assert (
        cli(["router", "train", "-q", "--data", str(data), "--out", str(tmp_path / "a"), "--version", "7"])
        == 0
    )
    first = json.loads(capsys.readouterr().out)
    assert (
        cli(["router", "train", "-q", "--data", str(data), "--out", str(tmp_path / "b"), "--version", "7"])
        == 0
    )
    assert json.loads(capsys.readouterr().out) == first  # seeded: same data, same head
    assert first["name"] == "difficulty" and first["version"] == "7"
    assert json.loads((tmp_path / "a" / "model.json").read_text()) == first
    head_from_document(json.loads((tmp_path / "a" / "head.json").read_text()))
    assert cli(["router", "eval", "--data", str(data), "--model", str(tmp_path / "a")]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {(r["router"], r["benchmark"]) for r in lines} == {
        (router, b) for router in ("learned", "heuristic", "random") for b in ("math", "quiz", "all")
    }
    for line in lines:
        assert {"benchmark", "prompts", "strong_share_at_95", "apgr", "cpt50", "cpt80"} <= set(line)


def test_bad_labeled_data_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "bad.jsonl"
    data.write_text('{"benchmark": "m", "prompt": "p", "weak_correct": "yes", "strong_correct": true}\n')
    assert cli(["router", "train", "-q", "--data", str(data), "--out", str(tmp_path / "m")]) != 0
    assert "bad.jsonl:1: weak_correct must be a bool" in capsys.readouterr().err
