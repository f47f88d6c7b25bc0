"""Shared foundations every layer may use: settings, the database schema, device and CPU flags."""
