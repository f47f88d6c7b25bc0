"""Loss networks and perceptual losses: the frozen feature extractors Gatys and training share."""
