"""The fleet accounts of a process, made when the first config with fleet limits is installed.

Fleet limits and budgets (`fleet`, `fleetstore`) are ~0.9 MiB of resident memory per process in modules
and contract models alone, which a sidecar whose policies have no `fleetLimits` should not pay. The
`Sidecar` holds this stand-in instead: it imports `fleetstore` and makes the real `FleetAccounts` on
the first config that needs them (`prepare`, run on every applied config, before any request is routed
by it), and from then on its `admit` and `settle` are the accounts' own bound methods, so a request of a
fleet-limited policy goes through no extra call. Before that, `/stats` has no fleet part (as the
accounts say when no policy used them) and closing has nothing to write.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from modelroute_contract import PolicyConfig, RouterConfig
    from modelroute_contract.stats import FleetFigures

    from .fleetstore import FleetAccounts
    from .proxy import Exchange


def needs_fleet(config: RouterConfig) -> bool:
    """Whether a policy of `config` has fleet limits or budgets."""
    return any(policy.fleet_limits is not None for policy in config.policies)


class LazyFleet:
    """`FleetAccounts`' interface to the views, the admin port and shutdown; `make` builds the accounts
    (it imports `fleetstore`)."""

    def __init__(self, make: Callable[[], FleetAccounts]) -> None:
        self._make = make
        self.accounts: FleetAccounts | None = None
        """The real accounts, once a config needed them."""

    def get(self) -> FleetAccounts:
        """The accounts, made now if they were not yet."""
        if self.accounts is None:
            self.accounts = accounts = self._make()
            # Instance attributes shadow the methods below: the request path calls the accounts directly.
            self.admit = accounts.admit  # type: ignore[method-assign]
            self.settle = accounts.settle  # type: ignore[method-assign]
        return self.accounts

    def prepare(self, config: RouterConfig) -> None:
        """On a config with fleet limits, make the accounts (and let them load the store client)."""
        if self.accounts is not None or needs_fleet(config):
            self.get().prepare(config)

    async def admit(
        self, policy: PolicyConfig, tenant: str, tier: str, estimate: int, exchange: Exchange
    ) -> None:
        """Count one request under the policy's fleet limits (`FleetAccounts.admit`)."""
        await self.get().admit(policy, tenant, tier, estimate, exchange)

    def settle(self, exchange: Exchange) -> None:
        """Charge an answered request (`FleetAccounts.settle`); only `admit` gives an exchange a ticket."""
        if self.accounts is not None:
            self.accounts.settle(exchange)

    def figures(self) -> FleetFigures | None:
        """The fleet part of `/stats`: None while no config needed the accounts."""
        return None if self.accounts is None else self.accounts.figures()

    async def close(self) -> None:
        """Write what is unwritten and close the store connection, if there are accounts."""
        if self.accounts is not None:
            await self.accounts.close()
