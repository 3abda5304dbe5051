"""The operator's pure decisions: API models, the compiler, admission, canary and health state machines,
status. Nothing here does network I/O or imports kopf, kubernetes or aiohttp."""
