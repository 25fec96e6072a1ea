"""videogene.data: the synthetic atlas, dataset preparation and the training stream."""
