"""Fake servers the tests run the sidecar and operator against."""
