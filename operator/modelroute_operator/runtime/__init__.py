"""The operator's wiring: Kopf handlers, the reconciler and monitor loops, the webhook server, the
process entry points and the `modelroute` CLI."""
