"""Image decoding, encoding and colour operations on plain arrays; no torch, no HTTP."""
