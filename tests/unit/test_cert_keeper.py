"""The certificate keeper's pure parts: a new pair serves every host and chains to its CA, when a pair
must be renewed, and the caBundle patch touches only the webhooks that lack the bundle."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest
from cryptography import x509

from modelroute_operator.runtime.cert_keeper import (
    ca_bundle_patch,
    describe_certificate,
    new_pair,
    renewal_reason,
)

HOSTS = ("mr-modelroute", "mr-modelroute.ns.svc", "127.0.0.1")
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def test_a_new_pair_names_every_host_and_chains_to_its_ca() -> None:
    pair = new_pair(HOSTS, 30, None, NOW)
    not_before, not_after, names = describe_certificate(pair.cert)
    assert names == set(HOSTS) and not_before <= NOW < not_after == NOW + timedelta(days=30)
    x509.load_pem_x509_certificate(pair.cert).verify_directly_issued_by(
        x509.load_pem_x509_certificate(pair.ca)
    )
    assert pair.key.startswith(b"-----BEGIN PRIVATE KEY-----")


@pytest.mark.parametrize(
    ("later", "hosts", "renew"),
    [
        (timedelta(days=1), HOSTS, ""),
        (timedelta(days=21), HOSTS, "expires"),  # less than a third of 30 days left
        (timedelta(days=1), (*HOSTS, "other.svc"), "does not name other.svc"),
    ],
)
def test_when_a_pair_is_renewed(later: timedelta, hosts: tuple[str, ...], renew: str) -> None:
    pair = new_pair(HOSTS, 30, None, NOW)
    reason = renewal_reason(pair, hosts, NOW + later)
    assert (renew in reason) if renew else reason == ""
    assert renewal_reason(None, HOSTS, NOW) == "no serving certificate yet"


def test_a_renewal_keeps_the_previous_ca_trusted_but_not_older_ones() -> None:
    first = new_pair(HOSTS, 30, None, NOW)
    second = new_pair(HOSTS, 30, first, NOW + timedelta(days=21))
    third = new_pair(HOSTS, 30, second, NOW + timedelta(days=42))
    assert second.ca.count(b"BEGIN CERTIFICATE") == 2 and first.ca in second.ca
    assert third.ca.count(b"BEGIN CERTIFICATE") == 2 and first.ca not in third.ca


def test_the_patch_sets_only_the_bundles_that_differ() -> None:
    def hook(bundle: str | None) -> SimpleNamespace:
        return SimpleNamespace(client_config=SimpleNamespace(ca_bundle=bundle))

    configuration = SimpleNamespace(webhooks=[hook("B"), hook(None), hook("old")])
    assert ca_bundle_patch(configuration, "B") == [
        {"op": "add", "path": "/webhooks/1/clientConfig/caBundle", "value": "B"},
        {"op": "add", "path": "/webhooks/2/clientConfig/caBundle", "value": "B"},
    ]
    assert ca_bundle_patch(SimpleNamespace(webhooks=[hook("B")]), "B") == []
