"""videogene.pipelines."""
