"""HTTP layer: parse and validate requests, call plain functions, shape responses."""
