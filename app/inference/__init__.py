"""Running style networks: device choice, loaded networks, the bounded executor."""
