"""Learned routing in the engine: training is deterministic, the head scores what it learned, the
figures of `routing_eval` are right on hand-made tables, and the router computes an embedding only when
a rule it reaches needs one (once per request, shared by the learned score and the semantic route).

A fake embedding (a seeded vector per word, averaged) stands in for WordLlama, so these tests are pure
and fast; `tests/unit/test_learned_sidecar.py` runs the real one.
"""

from __future__ import annotations

import functools
import hashlib
import json
import zlib

import numpy as np
import pytest
from engine_builders import FakeHealth, config, endpoint, features, policy, rule

from modelroute_contract import DifficultyModel, PolicyConfig, RangeMatch, SemanticMatch, SemanticRoute
from modelroute_contract.schemas import canonical_json
from modelroute_sidecar.engine import Router
from modelroute_sidecar.engine.complexity import NOT_SCORED
from modelroute_sidecar.engine.difficulty import head_from_document, prompt_words, text_features, text_signals
from modelroute_sidecar.engine.learned import PolicyModels, head_problem
from modelroute_sidecar.engine.routing_eval import figures, random_figures
from modelroute_sidecar.engine.semantic import build_semantic_index
from modelroute_sidecar.engine.training import Example, TrainingSettings, _members, train


def fake_embed(text: str) -> np.ndarray:
    """A unit vector per text: the mean of a seeded random vector per lower-cased word."""
    words = text.lower().split() or [""]
    rows = [np.random.default_rng(zlib.crc32(w.encode())).standard_normal(256) for w in words]
    vector = np.mean(rows, axis=0).astype(np.float32)
    return vector / np.linalg.norm(vector)


def labeled(n: int = 240, seed: int = 7) -> list[Example]:
    """Two groups; within each, prompts with more numbers fail the weak tier (a planted signal)."""
    rng = np.random.default_rng(seed)
    examples = []
    for i in range(n):
        group = "math" if i % 2 else "exam"
        quantities = int(rng.integers(1, 8))
        words = " ".join(str(int(rng.integers(1, 99))) for _ in range(quantities))
        prompt = f"{group} question {i % 5} with {words} apples"
        weak_ok = quantities <= 3 or rng.random() < 0.1
        examples.append(
            Example(
                group=group,
                subject=f"{group}-{i % 3}",
                vector=fake_embed(prompt),
                features=text_features(prompt),
                weak_correct=bool(weak_ok),
                strong_correct=bool(rng.random() < 0.9),
            )
        )
    return examples


def test_training_is_deterministic_and_the_head_is_well_formed() -> None:
    first = train(labeled(), name="d", version="1")
    second = train(labeled(), name="d", version="1")
    assert canonical_json(first) == canonical_json(second)
    assert head_problem(first) is None
    assert [g["name"] for g in first["groups"]] == ["exam", "math"]
    assert (
        hashlib.sha256(canonical_json(first).encode()).hexdigest()
        == hashlib.sha256(canonical_json(second).encode()).hexdigest()
    )


def test_the_head_ranks_by_the_planted_signal() -> None:
    head = head_from_document(train(labeled(), name="d", version="1"))
    easy = "math question 1 with 5 apples"
    hard = "math question 1 with 5 17 42 8 61 23 apples"
    assert head.gain(fake_embed(hard), text_features(hard)) > head.gain(fake_embed(easy), text_features(easy))
    assert head.group_of(fake_embed("exam question 2 with 3 apples")).name == "exam"


def worded(n: int = 240, seed: int = 11) -> list[Example]:
    """One group whose prompts are alike but for one word: those with "zorp" fail the weak tier, those
    with "blick" do not (words no text feature counts)."""
    rng = np.random.default_rng(seed)
    fillers = [f"filler{chr(97 + i)}" for i in range(20)]
    examples = []
    for i in range(n):
        hard = bool(i % 2)
        words = " ".join(str(rng.choice(fillers)) for _ in range(30))
        prompt = f"{words} {'zorp' if hard else 'blick'} more"
        features, vocabulary = text_signals(prompt)
        examples.append(
            Example(
                group="math",
                subject="",
                vector=fake_embed(prompt),
                features=features,
                weak_correct=not hard or rng.random() < 0.1,
                strong_correct=True,
                words=vocabulary,
            )
        )
    return examples


def test_the_bag_of_words_weighs_a_telling_word() -> None:
    document = train(worded(), name="d", version="1", settings=TrainingSettings(l2_words=10.0))
    assert head_problem(document) is None
    group = document["groups"][0]
    assert "zorp" in group["words"] and group["words"] == sorted(group["words"])
    assert len(group["weakFails"]["wordWeights"]) == len(group["words"])
    head = head_from_document(document)
    hard, easy = "fillera fillerb fillerc zorp more", "fillera fillerb fillerc blick more"
    gain_hard = head.gain(fake_embed(hard), text_features(hard), prompt_words(hard))
    gain_easy = head.gain(fake_embed(easy), text_features(easy), prompt_words(easy))
    assert gain_hard - gain_easy > 0.3
    # The telling words carry the weak tier's failure: "zorp" for it, "blick" against it, most of all.
    weights = dict(zip(group["words"], group["weakFails"]["wordWeights"], strict=True))
    assert weights["zorp"] == max(weights.values()) > 0 > weights["blick"] == min(weights.values())
    # vocabulary 0 trains the head of before: no words, no word weights.
    plain = train(worded(), name="d", version="1", settings=TrainingSettings(vocabulary=0))
    assert "words" not in plain["groups"][0] and "wordWeights" not in plain["groups"][0]["weakFails"]
    assert head_problem(plain) is None


def test_the_vocabulary_is_the_most_frequent_words_and_training_stays_deterministic() -> None:
    settings = TrainingSettings(vocabulary=5, min_word_prompts=3)
    first = train(worded(), name="d", version="1", settings=settings)
    assert canonical_json(first) == canonical_json(train(worded(), name="d", version="1", settings=settings))
    # "more" is in every prompt, each filler in most; "zorp" and "blick" in half: not among the top 5.
    vocabulary = first["groups"][0]["words"]
    assert "more" in vocabulary and len(vocabulary) == 5 and not {"zorp", "blick"} & set(vocabulary)


def test_the_ensemble_members_are_distinct_and_capped_by_the_words_there_are() -> None:
    ranked = [f"w{i}" for i in range(100)]
    members = _members(ranked, TrainingSettings())
    # One member without words (its penalty is moot), three penalties per bag; 128 and 256 both cap at 100.
    assert members == [
        (0, 0.0),
        (64, 300.0),
        (64, 1000.0),
        (64, 3000.0),
        (100, 300.0),
        (100, 1000.0),
        (100, 3000.0),
    ]
    assert _members(ranked, TrainingSettings(vocabulary=0)) == [(0, 0.0)]
    assert _members([], TrainingSettings()) == [(0, 0.0)]


def test_the_ensemble_head_is_the_mean_of_its_members() -> None:
    """Two single-member heads and the ensemble of both: the ensemble's weights are their mean (a mean
    of linear heads is one linear head, so the engine scores it unchanged)."""
    base = {"vocabulary": 10, "min_word_prompts": 3, "l2_words": 10.0}
    alone = [
        train(
            worded(),
            name="d",
            version="1",
            settings=TrainingSettings(**base, member_vocabularies=(size,), member_l2_words=(1.0,)),
        )["groups"][0]  # type: ignore[index]
        for size in (0, 10)
    ]
    both = train(
        worded(),
        name="d",
        version="1",
        settings=TrainingSettings(**base, member_vocabularies=(0, 10), member_l2_words=(1.0,)),
    )["groups"][0]  # type: ignore[index]
    assert (
        head_problem(
            {
                "format": "modelroute.dev/difficulty-head/v1",
                "embedding": "wordllama/l2_supercat/256",
                "groups": [both],
            }
        )
        is None
    )
    for tier in ("weakFails", "strongFails"):
        for key in ("embeddingWeights", "featureWeights"):
            mean = (np.asarray(alone[0][tier][key]) + np.asarray(alone[1][tier][key])) / 2
            assert np.allclose(both[tier][key], mean, rtol=1e-4, atol=1e-8)
        # The member without words weighs none: each word's weight is half the worded member's.
        assert np.allclose(
            both[tier]["wordWeights"], np.asarray(alone[1][tier]["wordWeights"]) / 2, rtol=1e-4, atol=1e-8
        )
        assert both[tier]["bias"] == pytest.approx(
            (alone[0][tier]["bias"] + alone[1][tier]["bias"]) / 2, abs=1e-5
        )


def test_a_single_member_is_the_plain_head() -> None:
    """One member fits exactly the head of before: the same document as the default ensemble gives when
    every member coincides (a group whose words are all of one bag and one penalty)."""
    one = TrainingSettings(
        vocabulary=10, min_word_prompts=3, member_vocabularies=(10,), member_l2_words=(1.0,)
    )
    same = TrainingSettings(
        vocabulary=10, min_word_prompts=3, member_vocabularies=(10, 256), member_l2_words=(1.0, 1.0)
    )
    assert canonical_json(train(worded(), name="d", version="1", settings=one)) == canonical_json(
        train(worded(), name="d", version="1", settings=same)
    )


def test_a_head_without_words_still_loads() -> None:
    document = json.loads(canonical_json(train(worded(), name="d", version="1")))
    for group in document["groups"]:
        del group["words"]
        for tier in ("weakFails", "strongFails"):
            del group[tier]["wordWeights"]
    assert head_problem(document) is None
    assert head_from_document(document).groups[0].words == {}


def test_a_group_with_too_few_prompts_is_refused() -> None:
    with pytest.raises(ValueError, match="benchmark tiny: fewer than 20"):
        train(
            [*labeled(40), *[e.__class__(**{**e.__dict__, "group": "tiny"}) for e in labeled(4)]],
            name="d",
            version="1",
        )


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda d: d.update(format="x"), "head.format must be"),
        (lambda d: d.update(embedding="other/model"), "head.embedding must be"),
        (lambda d: d["groups"][0].update(centroid=[0.0] * 3), "centroid has 3 values, not 256"),
        (
            lambda d: d["groups"][0]["weakFails"].update(featureWeights=[1.0]),
            "weakFails: 256 embedding weights",
        ),
        (lambda d: d["groups"][0]["strongFails"].update(bias="x"), "malformed"),
        (lambda d: d["groups"][0].update(featureLow=[1.0]), "featureLow: 18 values"),
        (lambda d: d["groups"][0]["weakFails"]["embeddingWeights"].__setitem__(0, float("nan")), "finite"),
        (lambda d: d.update(groups=[]), "head.groups must be a non-empty list"),
        (lambda d: d["groups"][0].update(words=["a", "a"]), "words: each word once"),
        (lambda d: d["groups"][0].update(words=[1]), "words must be a list of words"),
        (lambda d: d["groups"][0].update(words=[f"w{i}" for i in range(1025)]), "at most 1024 words"),
        (lambda d: d["groups"][0].update(words=["apples"]), "weakFails.wordWeights: one weight a word"),
        (
            lambda d: (
                d["groups"][0].update(words=["apples"])
                or [
                    d["groups"][0][t].update(wordWeights=[float("inf")]) for t in ("weakFails", "strongFails")
                ]
            ),
            "finite",
        ),
    ],
)
def test_a_malformed_head_is_named(change, problem) -> None:  # type: ignore[no-untyped-def]
    document = json.loads(canonical_json(train(labeled(), name="d", version="1")))
    change(document)
    assert problem in (head_problem(document) or "")


# --------------------------------------------------------------------------------------------- figures


def test_figures_of_a_perfect_and_a_useless_router() -> None:
    # weak fails the first two, strong answers all: routing exactly those two recovers the gap.
    weak = [False, False, True, True, True]
    strong = [True] * 5
    perfect = figures("t", [0.9, 0.8, 0.1, 0.2, 0.3], weak, strong)
    assert perfect["strong_share_at_95"] == 0.4  # 2 of 5 calls reach 100% of strong accuracy
    assert perfect["cpt50"] == 0.2 and perfect["cpt80"] == 0.4
    backwards = figures("t", [0.1, 0.2, 0.9, 0.8, 0.7], weak, strong)
    assert backwards["strong_share_at_95"] == 1.0
    assert random_figures("t", weak, strong)["apgr"] == 0.5
    assert random_figures("t", weak, strong)["cpt50"] == 0.6  # the first share whose expectation passes 50%


def test_ties_keep_the_order_of_the_prompts() -> None:
    weak, strong = [True, False], [True, True]
    assert figures("t", [1, 1], weak, strong)["strong_share_at_95"] == 1.0


# --------------------------------------------------------------------------------------------- router


class CountingEmbed:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, text: str) -> np.ndarray:
        self.calls += 1
        return fake_embed(text)


@functools.cache
def trained() -> str:
    return canonical_json(train(labeled(), name="d", version="1"))


def learned_config(*rules):  # type: ignore[no-untyped-def]
    document = json.loads(trained())
    model = DifficultyModel(
        name="difficulty",
        version="1",
        sha256=hashlib.sha256(canonical_json(document).encode()).hexdigest(),
        head=document,
    )
    routes = (
        SemanticRoute(name="code", examples=("python function bug", "compile error in c")),
        SemanticRoute(name="chat", examples=("hello how are you", "tell me a joke")),
    )
    learned = PolicyConfig(
        name="policy",
        virtual_models=("auto",),
        rules=rules,
        difficulty_models=(model,),
        semantic_routes=routes,
    )
    endpoints = [endpoint(name) for name in ("cheap", "strong", "coder")]
    return config(endpoints, learned), document, routes


def router_with(cfg, document, routes, embed):  # type: ignore[no-untyped-def]
    models = PolicyModels(
        embed=embed,
        heads={"difficulty": head_from_document(document)},
        semantic=build_semantic_index(routes, embed),
    )
    return Router(cfg, "eu", {"policy": models})


def test_a_semantic_rule_takes_its_best_route_and_shares_one_embedding_with_the_score() -> None:
    cfg, document, routes = learned_config(
        rule("code", ["coder"], semantic=SemanticMatch(route="code", min_similarity=0.3)),
        rule("hard", ["strong"], complexity=RangeMatch(min=0), complexity_scorer="difficulty"),
        rule("rest", ["cheap"]),
    )
    embed = CountingEmbed()
    router = router_with(cfg, document, routes, embed)
    loaded = embed.calls  # the examples, embedded at load
    decision = router.decide(features(prompt_text="python function bug please"), FakeHealth(), seed=1)
    assert (
        decision.rule == "code" and decision.semantic_route == "code" and decision.semantic_similarity > 0.3
    )
    assert decision.complexity == NOT_SCORED  # no rule needed a score
    decision = router.decide(features(prompt_text="hello how are you"), FakeHealth(), seed=1)
    assert decision.rule == "hard"  # best route is chat, not code: the learned rule decides
    assert decision.semantic_route == "chat" and decision.complexity_scorer == "difficulty"
    assert 0 <= decision.complexity <= 100
    assert embed.calls == loaded + 2  # one embedding per request, for both conditions


def test_no_embedding_when_an_earlier_rule_matches() -> None:
    cfg, document, routes = learned_config(
        rule("tenant", ["cheap"], metadata={"tier": ("free",)}),
        rule("hard", ["strong"], complexity=RangeMatch(min=50), complexity_scorer="difficulty"),
        rule("rest", ["cheap"]),
    )
    embed = CountingEmbed()
    router = router_with(cfg, document, routes, embed)
    loaded = embed.calls
    decision = router.decide(features(metadata={"tier": "free"}), FakeHealth(), seed=1)
    assert (
        decision.rule == "tenant" and decision.complexity == NOT_SCORED and decision.complexity_scorer == ""
    )
    assert embed.calls == loaded


def test_the_learned_score_and_the_heuristic_are_separate() -> None:
    cfg, document, routes = learned_config(
        rule("heuristic", ["cheap"], complexity=RangeMatch(max=100), complexity_scorer="heuristic"),
    )
    router = router_with(cfg, document, routes, CountingEmbed())
    decision = router.decide(features(), FakeHealth(), seed=1)
    assert decision.rule == "heuristic" and decision.complexity_scorer == "heuristic"


def test_a_router_refuses_a_config_naming_models_it_was_not_given() -> None:
    cfg, _, _ = learned_config(
        rule("hard", ["strong"], complexity=RangeMatch(min=50), complexity_scorer="difficulty"),
        rule("rest", ["cheap"]),
    )
    with pytest.raises(ValueError, match="scores complexity with 'difficulty', which is not loaded"):
        Router(cfg, "eu")


def test_the_contract_refuses_a_rule_naming_an_unknown_model_or_route() -> None:
    with pytest.raises(ValueError, match="complexityScorer 'nope' is not a difficultyModels name"):
        policy(rule("r", ["cheap"], complexity=RangeMatch(min=1), complexity_scorer="nope"))
    with pytest.raises(ValueError, match=r"semantic\.route 'nope' is not a semanticRoutes name"):
        policy(rule("r", ["cheap"], semantic=SemanticMatch(route="nope")))


def test_a_tampered_head_does_not_match_its_pin() -> None:
    document = train(labeled(), name="d", version="1")
    digest = hashlib.sha256(canonical_json(document).encode()).hexdigest()
    document["groups"][0]["bias"] = 0.0
    with pytest.raises(ValueError, match="the policy pins"):
        DifficultyModel(name="d", version="1", sha256=digest, head=document)


def test_prompt_words_are_the_runs_of_a_to_z_of_the_lowered_text_whatever_its_characters() -> None:
    # text_signals splits bytes instead of running the regex; any text must give the regex's words
    import random
    import re

    alphabet = "abcxyzABCXYZ019 .,!?\n\t_-'/éÉßİıΣσжЖ中文🙂\u0301\u00a0\u2581\ud800\udfff"
    pick = random.Random(11)
    for _ in range(500):
        text = "".join(pick.choice(alphabet) for _ in range(pick.randrange(0, 80)))
        assert prompt_words(text) == frozenset(re.findall("[a-z]+", text.lower())), repr(text)
    assert text_signals("Naïve café: ÀB über-Cool 🙂x\ud800y")[1] == {
        "na",
        "ve",
        "caf",
        "b",
        "ber",
        "cool",
        "x",
        "y",
    }
