"""videogene.models: the VideoGeneUNet and its presets."""
