"""Serving: the loaded networks (service), runner, backends, executor and the predict path."""
