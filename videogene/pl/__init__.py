"""videogene.pl."""
