"""Data classification: every signal is evaluated and the strictest class (by the policy's precedence) wins."""

from __future__ import annotations

from typing import Any

import pytest
from engine_builders import features, residency

from modelroute_sidecar.engine.classification import Classification, Classifier
from modelroute_sidecar.engine.model import DecisionError

CLASSES = {"eu-personal": (["eu-west"], ["gdpr"]), "pci": ([], ["pci"])}


def classifier(**fields: Any) -> Classifier:
    return Classifier.from_config(residency(CLASSES, **fields))


@pytest.mark.parametrize(
    ("fields", "request_fields", "expected"),
    [
        # nothing configured, nothing declared
        ({}, {}, ("public", "")),
        # declared by the client: a defined class or public, any case, either header
        ({}, {"declared_data_class": "pci"}, ("pci", "header")),
        ({}, {"declared_data_class": "PCI"}, ("pci", "header")),
        ({}, {"declared_data_class": "public"}, ("public", "header")),
        ({"header": "x-class"}, {"headers": {"x-class": "eu-personal"}}, ("eu-personal", "header")),
        # the policy's header wins over what extract_features read from the standard one
        (
            {"header": "x-class"},
            {"headers": {"x-class": "pci"}, "declared_data_class": "public"},
            ("pci", "header"),
        ),
        # a laxer declaration never wins: the strictest signal does (precedence: eu-personal, pci)
        (
            {"tenant_defaults": {"acme": "pci"}, "detectors": [("email", "eu-personal")]},
            {"declared_data_class": "public", "metadata": {"tenant": "acme"}, "prompt_text": "a@b.eu"},
            ("eu-personal", "detector:email"),
        ),
        (
            {"tenant_defaults": {"acme": "pci"}},
            {"declared_data_class": "public", "metadata": {"tenant": "ACME"}},
            ("pci", "tenant"),
        ),
        # a stricter declaration raises the class
        (
            {"detectors": [("card", "pci")]},
            {"declared_data_class": "eu-personal", "prompt_text": "card 4111 1111 1111 1111"},
            ("eu-personal", "header"),
        ),
        # an explicit precedence decides which is reported
        (
            {
                "tenant_defaults": {"acme": "pci"},
                "detectors": [("email", "eu-personal")],
                "precedence": ["pci", "eu-personal"],
            },
            {"metadata": {"tenant": "acme"}, "prompt_text": "mail a@b.eu"},
            ("pci", "tenant"),
        ),
        (
            {"tenant_defaults": {"acme": "pci"}, "detectors": [("email", "eu-personal")]},
            {"metadata": {"tenant": "acme"}, "prompt_text": "mail a@b.eu"},
            ("eu-personal", "detector:email"),
        ),
        ({"tenant_defaults": {"acme": "pci"}}, {"metadata": {"tenant": "other"}}, ("public", "")),
        # every detector runs; the strictest class wins whatever the detectors' order
        (
            {"detectors": [("card", "pci"), ("email", "eu-personal")]},
            {"prompt_text": "mail a@b.eu, card 4111 1111 1111 1111"},
            ("eu-personal", "detector:email"),
        ),
        # a class a signal gives but the policy does not define is stricter than every defined one
        (
            {"detectors": [("email", "eu-personal"), ("card", "ghost")]},
            {"prompt_text": "mail a@b.eu, card 4111 1111 1111 1111"},
            ("ghost", "detector:card"),
        ),
        # the default is a floor: a declared public does not undo it
        ({"default_class": "pci"}, {"declared_data_class": "public"}, ("pci", "default")),
        (
            {"detectors": [("email", "eu-personal"), ("card", "pci")]},
            {"prompt_text": "mail a@b.eu, card 4111 1111 1111 1111"},
            ("eu-personal", "detector:email"),
        ),
        (
            {"detectors": [("card", "pci"), ("phone", "eu-personal")]},
            {"prompt_text": "call +44 20 7946 0958"},
            ("eu-personal", "detector:phone"),
        ),
        (
            {"detectors": [("iban", "pci")]},
            {"prompt_text": "IBAN DE89 3704 0044 0532 0130 00"},
            ("pci", "detector:iban"),
        ),
        # nothing found: the policy default, else public
        ({"detectors": [("email", "eu-personal")], "default_class": "pci"}, {}, ("pci", "default")),
        ({"detectors": [("email", "eu-personal")]}, {"prompt_text": "no pii"}, ("public", "")),
    ],
)
def test_classify(fields: dict[str, Any], request_fields: dict[str, Any], expected: tuple[str, str]) -> None:
    result = classifier(**fields).classify(features(**request_fields))
    assert isinstance(result, Classification)
    assert (result.data_class, result.source) == expected
    # every signal is recorded, and the reported class is among them (or public with none)
    assert result.data_class in {c for _, c in result.signals} | {"public"}
    assert result.classes == {c for _, c in result.signals} - {"public"}


def test_a_laxer_declaration_is_kept_strict_and_noted() -> None:
    result = classifier(detectors=[("email", "eu-personal"), ("card", "pci")]).classify(
        features(declared_data_class="public", prompt_text="a@b.eu 4111 1111 1111 1111")
    )
    assert isinstance(result, Classification)
    assert result.data_class == "eu-personal"
    assert result.classes == {"eu-personal", "pci"}
    assert result.signals == (
        ("header", "public"),
        ("detector:email", "eu-personal"),
        ("detector:card", "pci"),
    )
    assert result.notes and "declared data class 'public' is laxer than 'eu-personal'" in result.notes[0]


@pytest.mark.parametrize("declared", ["secret", "eu", "pci2", "public-ish"])
def test_an_undefined_declared_class_is_refused(declared: str) -> None:
    result = classifier().classify(features(declared_data_class=declared))
    assert isinstance(result, DecisionError)
    assert (result.status, result.code) == (400, "invalid_data_class")
    assert declared in result.message
    assert "eu-personal, pci, public" in result.message


def test_a_blank_policy_header_falls_back_to_the_standard_one() -> None:
    result = classifier(header="x-class").classify(
        features(headers={"x-class": "  "}, declared_data_class="pci")
    )
    assert isinstance(result, Classification)
    assert (result.data_class, result.source) == ("pci", "header")
