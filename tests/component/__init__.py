"""Component tests: the sidecar as a real server against fake upstreams, called with the openai SDK."""
