"""Pure torch style networks: no HTTP, no files, no settings."""
