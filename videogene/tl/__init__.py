"""videogene.tl."""
