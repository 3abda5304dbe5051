"""The modelroute operator, in floors whose imports go one way (import-linter contracts in pyproject.toml):
`runtime` (wiring: Kopf handlers, loops, servers, command lines) → `clients` (I/O: the API server, the
sidecars' admin ports, replicas' health endpoints) → `logic` (pure decisions) → `modelroute_contract`.
"""
