"""The training stream's choices, in a module without torch so that the (torch-free) training
config validates ``data.*`` keys against the same lists the stream
(:class:`videogene.data.stream.GeneVideoDataset`) accepts."""

from __future__ import annotations

#: How a visit picks each time point's slice.
SLICE_DRAW: tuple[str, ...] = ("random", "aligned", "context_aligned")
#: How often an epoch visits each gene.
GENE_SAMPLING: tuple[str, ...] = ("uniform", "nnz", "spatial")
