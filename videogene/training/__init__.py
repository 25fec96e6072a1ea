"""videogene.training."""
