"""The modelroute router sidecar: `engine` is the pure decision core (imported by the operator too); the
other modules are the process, its servers and its upstream client."""
