"""The style catalog: which styles exist, what they are, and which engine renders each."""
