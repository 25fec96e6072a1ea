"""videogene.pp."""
