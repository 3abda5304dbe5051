"""Data classification: declared header, then tenant default, then detectors, then the policy default."""

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
        # a declaration beats the tenant default and the detectors
        (
            {"tenant_defaults": {"acme": "pci"}, "detectors": [("email", "eu-personal")]},
            {"declared_data_class": "public", "metadata": {"tenant": "acme"}, "prompt_text": "a@b.eu"},
            ("public", "header"),
        ),
        # tenant default beats detectors
        (
            {"tenant_defaults": {"acme": "pci"}, "detectors": [("email", "eu-personal")]},
            {"metadata": {"tenant": "acme"}, "prompt_text": "mail a@b.eu"},
            ("pci", "tenant"),
        ),
        ({"tenant_defaults": {"acme": "pci"}}, {"metadata": {"tenant": "other"}}, ("public", "")),
        # detectors in the policy's order: the first that finds wins
        (
            {"detectors": [("card", "pci"), ("email", "eu-personal")]},
            {"prompt_text": "mail a@b.eu, card 4111 1111 1111 1111"},
            ("pci", "detector:card"),
        ),
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
    assert result == Classification(*expected)


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
    assert result == Classification("pci", "header")
