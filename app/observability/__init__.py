"""Metrics, request ids and structured logs: what operators see of a running service."""
