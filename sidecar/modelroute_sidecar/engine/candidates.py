"""Candidates: the plain records the engine filters and orders, built once per config from the contract.

Reading pydantic models is slow next to reading slotted dataclasses, and most of what a candidate carries
(its endpoint's capabilities and prices, its region, compliance labels, weight, locality rank and the
`Choice` handed to the proxy) is fixed for the life of a config. So `index` flattens the RouterConfig into
these records when the config loads, and a decision only reads them.
"""

from __future__ import annotations

from dataclasses import dataclass

from modelroute_contract import PROVIDER_APIS, PROVIDER_JSON_MODE, EndpointConfig

from .model import Choice, Dropped, DropReason, Role


@dataclass(frozen=True, slots=True)
class EndpointTraits:
    """What the filters need to know about an endpoint."""

    name: str
    model: str
    context_window: int
    max_output_tokens: int
    streaming: bool
    tools: bool
    json_mode: bool
    input_per_million: float
    output_per_million: float
    provider: str = "openai"
    apis: frozenset[str] = PROVIDER_APIS["openai"]
    """The APIs the endpoint's provider serves (`PROVIDER_APIS`)."""

    @classmethod
    def from_config(cls, endpoint: EndpointConfig) -> EndpointTraits:
        """Flatten a contract endpoint."""
        caps, price = endpoint.capabilities, endpoint.pricing
        return cls(
            name=endpoint.name,
            model=endpoint.model,
            context_window=caps.context_window,
            max_output_tokens=caps.max_output_tokens,
            streaming=caps.streaming,
            tools=caps.tools,
            # what the provider cannot do, the endpoint cannot either, whatever its spec declares
            json_mode=caps.json_mode and endpoint.provider in PROVIDER_JSON_MODE,
            input_per_million=price.input_per_million,
            output_per_million=price.output_per_million,
            provider=endpoint.provider,
            apis=PROVIDER_APIS[endpoint.provider],
        )


@dataclass(frozen=True, slots=True)
class Candidate:
    """One replica in one list (targets, fallback or escalation) of one rule."""

    endpoint: EndpointTraits
    replica: str
    region: str
    compliance: frozenset[str]
    unhealthy: bool
    """The operator's active health check says `Unhealthy`."""
    target_weight: int
    """The rule's weight for the endpoint (1 outside the target list, where only order matters)."""
    replica_weight: int
    weight: int
    """Share in the weighted pick: target weight times replica weight."""
    rank: int
    """Locality rank of the region: 0 is the most preferred."""
    choice: Choice
    """What the proxy gets when this candidate is tried in its list's role."""
    first_choice: Choice
    """The same with role `primary`, for the one candidate picked first (targets only)."""
    ejected_drop: Dropped
    """Its record when passively ejected, made once: ejection is the common per-request drop."""

    @property
    def key(self) -> tuple[str, str]:
        """(endpoint, replica)."""
        return (self.endpoint.name, self.replica)

    def dropped(self, reason: DropReason, detail: str = "") -> Dropped:
        """The record of this candidate being dropped."""
        return Dropped(self.endpoint.name, self.replica, self.region, reason, detail)


EJECTED_DETAIL = "passively ejected by this sidecar"


def make_choice(endpoint: EndpointTraits, replica: str, region: str, url: str, role: Role) -> Choice:
    """The `Choice` the proxy follows for one replica in one role."""
    return Choice(
        endpoint=endpoint.name,
        replica=replica,
        region=region,
        url=url,
        upstream_model=endpoint.model,
        role=role,
    )
