"""AnnData slices -> gene videos: a streamable Parquet dataset (``videogene prepare``).

Layout and metadata follow docs/design.md section 2. Memory stays bounded by one slice (its
cells x genes matrix and its raster) plus one shard: each slice's raster is spilled, split by
gene shard, to a temporary folder, then each shard gathers its genes across slices.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from ..errors import InputError
from ..utils import check_output_dir, get_logger
from .meta import DEFAULT_VALUE_MAX as VALUE_MAX  # the format's expression range
from .meta import FORMAT_VERSION, MASKS_NAME, META_NAME

logger = get_logger("videogene.data.prepare")


def _parquet_schema():
    import pyarrow as pa

    return pa.schema([
        ("gene", pa.string()),
        ("gene_id", pa.int32()),
        ("slice_idx", pa.list_(pa.int32())),
        ("indices", pa.list_(pa.list_(pa.int32()))),
        ("values", pa.list_(pa.list_(pa.float32()))),
        ("nnz_fraction", pa.float32()),
        ("mean", pa.float32()),
    ])


def _read_gene_list(genes) -> list[str]:
    if isinstance(genes, (str, Path)):
        p = Path(genes)
        if not p.exists():
            raise InputError(f"--genes {p}: file not found")
        names = [ln.strip() for ln in p.read_text().splitlines()]
        names = [n for n in names if n and not n.startswith("#")]
        if not names:
            raise InputError(f"--genes {p}: no gene names in the file")
        return names
    names = [str(g) for g in genes]
    if not names:
        raise InputError("genes: empty list")
    return names


def _combine_gene_sets(files, gene_set: str, counts: dict) -> list[str]:
    first = files[0].var_names
    if gene_set == "same":
        ref = set(first)
        for f in files[1:]:
            if set(f.var_names) != ref:
                only_here = len(set(f.var_names) - ref)
                only_first = len(ref - set(f.var_names))
                raise InputError(
                    f"{f.path}: gene set differs from {files[0].path} ({only_here} genes only here, "
                    f"{only_first} only there); use --gene-set union (missing genes become absent "
                    "frames) or --gene-set intersection (keep shared genes only)")
        return list(first)
    if gene_set == "union":
        seen = dict.fromkeys(first)
        for f in files[1:]:
            seen.update(dict.fromkeys(f.var_names))
        vocab = list(seen)
        counts["genes_absent_from_some_files"] = sum(
            1 for g in vocab if any(g not in set_ for set_ in (set(f.var_names) for f in files)))
        return vocab
    if gene_set == "intersection":
        common = set(first)
        for f in files[1:]:
            common &= set(f.var_names)
        if not common:
            raise InputError("--gene-set intersection: the input files share no gene")
        union = set().union(*(set(f.var_names) for f in files))
        counts["genes_dropped_intersection"] = len(union) - len(common)
        return [g for g in first if g in common]
    raise InputError(f"gene_set: expected 'same', 'union' or 'intersection', got {gene_set!r}")


def _cells_per_gene(files, slices, vocab_index, progress) -> np.ndarray:
    from tqdm.auto import tqdm

    n = np.zeros(len(vocab_index), dtype=np.int64)
    for sl in tqdm(slices, desc="counting cells per gene", unit="slice", disable=not progress):
        x = sl.file.read_rows(sl.rows)
        cols = np.bincount(x.indices[x.data != 0], minlength=x.shape[1])
        gmap = np.array([vocab_index.get(g, -1) for g in sl.file.var_names])
        ok = gmap >= 0
        np.add.at(n, gmap[ok], cols[ok])
    return n


def _grid_gaps(timepoints: list[float]) -> list[float]:
    """Time points missing from the regular grid the sampled ones suggest (for the log)."""
    if len(timepoints) < 3:
        return []
    diffs = np.diff(timepoints)
    step = float(diffs.min())
    if step <= 0:
        return []
    ratios = diffs / step
    if not np.allclose(ratios, np.round(ratios), atol=1e-6):
        return []
    full = np.round(np.arange(timepoints[0], timepoints[-1] + step / 2, step), 6)
    have = set(np.round(timepoints, 6).tolist())
    return [float(t) for t in full if float(t) not in have]


def prepare_dataset(
    inputs: str | Path | Sequence[str | Path],
    out_dir: str | Path,
    *,
    time_key: str = "timepoint",
    slice_key: str = "slice",
    spatial_key: str = "spatial",
    spatial_axes: tuple[int, int] | None = None,
    resolution: int = 64,
    genes: str | Path | Sequence[str] | None = None,
    min_cells: int = 0,
    gene_set: str = "same",
    timepoint: float | None = None,
    layer: str | None = None,
    holdout_timepoints: Sequence[float] | None = None,
    shard_genes: int = 1000,
    closing: int = 1,
    scale: str = "timepoint",
    orientation: str = "expression",
    reference_slice: str | None = None,
    progress: bool = True,
) -> dict:
    """Ingest .h5ad slices into a gene-video dataset folder and return its metadata.

    ``inputs``: one .h5ad holding all slices (``obs[slice_key]``) or several files (a file
    without the slice column is one slice). Time comes from ``obs[time_key]`` (floats or
    strings such as ``"E9.5"``) or ``timepoint`` for files without that column. Coordinates
    are ``obsm[spatial_key]``, columns ``spatial_axes`` (default the first two). Raw counts
    (integer values) get normalize_total (1e4) + log1p; non-integer input is taken as
    log-normalized. ``scale`` sets the canvas scale: ``"timepoint"`` (default: the slices
    of one time point share a scale and the largest fills the canvas, so every frame of the
    video uses the whole canvas and relative sizes within a time point stay), ``"dataset"``
    (one scale for all slices: growth between time points stays visible, early frames are
    small) or ``"slice"`` (each slice fills the canvas). The physical scale of every slice is
    in its recorded transform. ``orientation`` sets which way up and which handedness each slice
    lands after the principal-axes fit: ``"expression"`` (default: the canvas symmetry whose
    genes best correlate with already oriented slices, chained from the best-sampled time
    point, or from ``reference_slice``; see ``videogene.pp._orient``), ``"moments"`` (the
    third moment of the outline) or ``"none"`` (the input axes are kept: only centre and
    scale are fitted, for slices already registered to one another). The choice is in
    each transform's ``orientation`` record. ``holdout_timepoints`` are stored but
    recorded in ``meta["holdout"]`` so the training stream hides them. Everything dropped
    or empty is counted in ``meta["counts"]`` and logged.
    """
    from tqdm.auto import tqdm

    from ..pp._align import fit_alignment, fold_op
    from ..pp._io import open_input
    from ..pp._normalize import normalize_log1p
    from ..pp._orient import check_reference
    from ..pp._rasterize import rasterize_matrix

    if isinstance(inputs, (str, Path)):
        inputs = [inputs]
    inputs = [Path(p) for p in inputs]
    if not inputs:
        raise InputError("inputs: no .h5ad file given")
    if int(resolution) < 4:
        raise InputError(f"--resolution: must be >= 4, got {resolution}")
    if int(shard_genes) < 1:
        raise InputError(f"--shard-genes: must be >= 1, got {shard_genes}")
    if min_cells < 0:
        raise InputError(f"--min-cells: must be >= 0, got {min_cells}")
    if gene_set not in ("same", "union", "intersection"):
        raise InputError(f"--gene-set: expected same, union or intersection, got {gene_set!r}")
    if scale not in ("timepoint", "dataset", "slice"):
        raise InputError(f"--scale: expected timepoint, dataset or slice, got {scale!r}")
    if orientation not in ("expression", "moments", "none"):
        raise InputError(f"--orientation: expected expression, moments or none, got {orientation!r}")
    if reference_slice is not None and orientation != "expression":
        raise InputError(f"--reference-slice {reference_slice!r}: only used with --orientation "
                         f"expression (got {orientation})")
    resolution = int(resolution)
    out = check_output_dir(out_dir)
    holdout_req = sorted({float(t) for t in (holdout_timepoints or [])})

    files = []
    try:
        for p in inputs:
            files.append(open_input(p, time_key=time_key, slice_key=slice_key,
                                    spatial_key=spatial_key, timepoint=timepoint, layer=layer,
                                    spatial_axes=spatial_axes))
        for f in files:
            logger.info("%s%s: %s", f.path, f" layer {layer!r}" if layer else "",
                        "raw counts (integers) -> normalize_total + log1p" if f.is_counts
                        else "log-normalized values -> used as they are")
        counts: dict = {}
        vocab = _combine_gene_sets(files, gene_set, counts)
        counts["genes_input"] = len(vocab)
        if genes is not None:
            wanted = _read_gene_list(genes)
            have = set(vocab)
            missing = [g for g in wanted if g not in have]
            counts["genes_not_found"] = len(missing)
            if missing:
                logger.warning("%d requested genes are not in the input (e.g. %s)", len(missing),
                               ", ".join(missing[:5]))
            keep = set(wanted)
            new_vocab = [g for g in vocab if g in keep]
            counts["genes_dropped_not_listed"] = len(vocab) - len(new_vocab)
            vocab = new_vocab
            if not vocab:
                raise InputError(f"--genes {genes}: none of the listed genes is in the input")

        # slices: unique names, sorted by (time, file order, name)
        all_slices = [s for f in files for s in f.slices]
        names = [s.name for s in all_slices]
        if len(set(names)) != len(names):
            for s in all_slices:
                if names.count(s.name) > 1:
                    s.name = f"{Path(s.source).stem}/{s.name}"
        all_slices.sort(key=lambda s: s.timepoint)
        if reference_slice is not None:
            check_reference([s.name for s in all_slices], reference_slice)
        if min_cells > 0:
            n_cells = _cells_per_gene(files, all_slices, {g: i for i, g in enumerate(vocab)},
                                      progress)
            keep_mask = n_cells >= min_cells
            counts["genes_dropped_min_cells"] = int((~keep_mask).sum())
            vocab = [g for g, k in zip(vocab, keep_mask, strict=True) if k]
            if not vocab:
                raise InputError(f"--min-cells {min_cells}: no gene is expressed in that many cells")
        n_genes = len(vocab)
        vocab_index = {g: i for i, g in enumerate(vocab)}

        timepoints = sorted({s.timepoint for s in all_slices})
        holdout = [t for t in holdout_req if t in timepoints]
        absent = [t for t in holdout_req if t not in timepoints]
        if absent:
            logger.warning("hold-out time points without any slice (ignored): %s", absent)
        counts["holdout_timepoints_without_slice"] = len(absent)
        gaps = _grid_gaps(timepoints)
        counts["timepoints_without_slice"] = len(gaps)
        if gaps:
            logger.warning("time points missing from the sampled grid (no slice): %s", gaps)

        # alignment: per-slice centre/rotation/flip; the scale is shared per time point,
        # per dataset or fitted per slice (``scale``)
        axes = "input" if orientation == "none" else "principal"
        fits = [fit_alignment(s.file.coords[s.rows], name=f"{s.source} slice {s.name}", axes=axes)
                for s in all_slices]
        # the expression pre-pass scores each slice on its own-scale canvas (ops commute
        # with scaling); the chosen ops are folded in below
        orient = _orientation_records(files, all_slices, [dict(f) for f in fits], vocab_index,
                                      orientation, reference_slice, resolution, progress,
                                      normalize_log1p)
        groups: dict = {}
        for s, f in zip(all_slices, fits):
            key = {"dataset": 0, "timepoint": s.timepoint, "slice": id(f)}[scale]
            groups.setdefault(key, []).append(f)
        for group in groups.values():
            shared = min(f["scale"] for f in group)
            for f in group:
                f["scale"] = shared
                f.pop("extent", None)
        for i, rec in enumerate(orient):
            fits[i] = fold_op(fits[i], rec["op"])
            fits[i]["orientation"] = rec

        n_shards = max(1, math.ceil(n_genes / shard_genes))
        out.mkdir(parents=True, exist_ok=True)
        data_dir = out / "data"
        if data_dir.exists():
            for old in data_dir.glob("train-*.parquet"):
                old.unlink()
        data_dir.mkdir(exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".spill-", dir=out))
        try:
            meta = _ingest(files, all_slices, fits, vocab, vocab_index, resolution, n_shards,
                           shard_genes, tmp, data_dir, out, counts, closing, progress,
                           rasterize_matrix, normalize_log1p, tqdm, holdout=holdout)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    finally:
        for f in files:
            f.close()

    meta["timepoints"] = timepoints
    meta["scale_mode"] = scale
    slices_per_t: dict[str, int] = {}
    for s in meta["slices"]:
        slices_per_t[str(s["timepoint"])] = slices_per_t.get(str(s["timepoint"]), 0) + 1
    meta["slices_per_timepoint"] = slices_per_t
    stored_at = meta.pop("_genes_at_time")
    # whole time points are held out; "frames" is for single (gene, t) frames on top of
    # them (the stream honours both), which prepare itself never adds
    meta["holdout"] = {"timepoints": holdout, "frames": []}
    counts["holdout_frames"] = sum(stored_at[g].get(str(t), False) for t in holdout for g in vocab)
    synth = next((f.uns_synthetic for f in files if f.uns_synthetic is not None), None)
    if synth is not None:
        meta["synthetic"] = synth
    meta["counts"] = counts
    (out / META_NAME).write_text(json.dumps(meta, indent=1))
    (out / "README.md").write_text(_dataset_card(meta, n_shards))
    _log_counts(meta)
    return meta


def _orientation_records(files, all_slices, fits, vocab_index, orientation, reference_slice,
                         resolution, progress, normalize_log1p) -> list[dict]:
    """One ``transform["orientation"]`` record per slice (``op`` to fold into its fit)."""
    from ..pp._orient import ORIENT_RESOLUTION, orient_slices

    if orientation != "expression" or len(all_slices) == 1:
        note = {"note": "single slice: nothing to orient"} if len(all_slices) == 1 else {}
        return [{"method": orientation, "op": "identity", "score": None, "reference": None,
                 **note} for _ in all_slices]
    gmaps: dict[int, np.ndarray] = {}

    def load(i: int):
        sl = all_slices[i]
        f = sl.file
        x = f.read_rows(sl.rows)
        if f.is_counts:
            x = normalize_log1p(x)
        if id(f) not in gmaps:
            gmaps[id(f)] = np.array([vocab_index.get(g, -1) for g in f.var_names], dtype=np.int64)
        keep = np.flatnonzero(gmaps[id(f)] >= 0)
        if keep.size < x.shape[1]:
            x = x[:, keep]
        return x, f.coords[sl.rows], gmaps[id(f)][keep]

    return orient_slices(load, fits, names=[s.name for s in all_slices],
                         timepoints=[s.timepoint for s in all_slices],
                         n_cells=[len(s.rows) for s in all_slices], reference=reference_slice,
                         resolution=min(resolution, ORIENT_RESOLUTION), progress=progress)


def _ingest(files, all_slices, fits, vocab, vocab_index, resolution, n_shards, shard_genes, tmp,
            data_dir, out, counts, closing, progress, rasterize_matrix, normalize_log1p, tqdm,
            holdout=()):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ..pp import _spatial
    from . import units

    n_genes = len(vocab)
    n_slices = len(all_slices)
    n_pix = resolution * resolution
    gene_nnz = np.zeros(n_genes, dtype=np.int64)
    gene_sum = np.zeros(n_genes, dtype=np.float64)
    gene_tissue = np.zeros(n_genes, dtype=np.int64)
    present = np.zeros((n_slices, n_genes), dtype=bool)
    masks = np.zeros((n_slices, resolution, resolution), dtype=bool)
    # per-gene scale and spatial signal come from training slices only (no hold-out time point)
    train_slice = np.array([not any(abs(s.timepoint - h) < 1e-9 for h in holdout)
                            for s in all_slices], dtype=bool)
    moran = np.full((n_slices, n_genes), np.nan, dtype=np.float32)  # Moran's I per slice, gene
    amplitude = np.full((n_slices, n_genes), np.nan, dtype=np.float32)  # spatial sd / mean
    moran_null_var = []  # per training slice: variance of Moran's I for random values
    slices_meta = []
    vmin, vmax = math.inf, -math.inf
    norms = set()
    gmaps: dict[int, np.ndarray] = {}
    for si, (sl, tf) in enumerate(tqdm(list(zip(all_slices, fits, strict=True)), desc="slices",
                                       unit="slice", disable=not progress)):
        f = sl.file
        x = f.read_rows(sl.rows)
        norm = "normalize_total+log1p" if f.is_counts else "log1p"
        norms.add(norm)
        if f.is_counts:
            x = normalize_log1p(x)
        if id(f) not in gmaps:
            gmaps[id(f)] = np.array([vocab_index.get(g, -1) for g in f.var_names], dtype=np.int64)
        gmap = gmaps[id(f)]
        keep_cols = np.flatnonzero(gmap >= 0)
        if keep_cols.size < x.shape[1]:
            x = x[:, keep_cols]
        r = rasterize_matrix(x, f.coords[sl.rows], resolution=resolution, transform=tf,
                             closing=closing, name=f"{sl.source} slice {sl.name}",
                             sort_indices=False)  # tocsc below sorts anyway
        del x
        stack = r["stack"].tocsc()  # (H*W, kept genes of this file)
        # reorder columns into vocabulary order: (H*W, n_genes) with absent genes empty
        target = gmap[keep_cols]
        indptr = np.zeros(n_genes + 1, dtype=np.int64)
        lens = np.diff(stack.indptr)
        per_gene = np.zeros(n_genes, dtype=np.int64)
        per_gene[target] = lens
        indptr[1:] = np.cumsum(per_gene)
        order = np.argsort(target, kind="stable")
        if not np.array_equal(order, np.arange(order.size)):
            stack = stack[:, order]  # columns in vocabulary order (absent genes still missing)
        full = sp.csc_matrix((stack.data, stack.indices, indptr), shape=(n_pix, n_genes))
        del stack
        present[si, target] = True
        masks[si] = r["mask"]
        if train_slice[si]:
            # over the pixels that hold cells: those filled by the closing are neighbour means,
            # which would add autocorrelation to every gene
            occupied = r["counts"] > 0
            moran[si], amplitude[si] = _spatial.morans_i_sparse(full, occupied, amplitude=True)
            moran_null_var.append(_spatial.null_variance(occupied))
        gene_nnz += np.diff(full.indptr)
        gene_sum += np.bincount(np.repeat(np.arange(n_genes), np.diff(full.indptr)),
                                weights=full.data, minlength=n_genes)
        gene_tissue[target] += r["n_tissue_pixels"]
        if full.data.size:
            vmin, vmax = min(vmin, float(full.data.min())), max(vmax, float(full.data.max()))
        # spill the slice gene-major (CSC); shards read their gene range back by memmap
        np.save(tmp / f"{si:05d}_indptr.npy", full.indptr.astype(np.int64))
        np.save(tmp / f"{si:05d}_indices.npy", full.indices.astype(np.int32, copy=False))
        np.save(tmp / f"{si:05d}_data.npy", full.data.astype(np.float32, copy=False))
        del full
        slices_meta.append({
            "name": sl.name, "timepoint": sl.timepoint, "source": sl.source,
            "n_cells": r["n_cells"], "n_cells_outside": r["n_cells_outside"],
            "n_tissue_pixels": r["n_tissue_pixels"], "n_filled_pixels": r["n_filled_pixels"],
            "normalization": norm, "transform": r["transform"],
        })

    schema = _parquet_schema()
    nnz_fraction = np.divide(gene_nnz, gene_tissue, out=np.zeros(n_genes), where=gene_tissue > 0)
    mean = np.divide(gene_sum, gene_tissue, out=np.zeros(n_genes), where=gene_tissue > 0)
    empty_frames = 0
    gene_scale = np.zeros(n_genes, dtype=np.float64)
    tissue_px = np.array([s["n_tissue_pixels"] for s in slices_meta], dtype=np.float64)
    u_sum = u_sq = 0.0  # sums of u = clip(x / scale, 0, 1) over tissue pixels of training frames
    u_n = float((present & train_slice[:, None]).sum(axis=1) @ tissue_px)
    for k in tqdm(range(n_shards), desc="writing shards", unit="shard", disable=not progress):
        a, b = k * shard_genes, min(n_genes, (k + 1) * shard_genes)
        pairs = np.argwhere(present[:, a:b].T)  # (gene in shard, slice), gene-major
        starts = np.zeros(len(pairs), dtype=np.int64)
        lens = np.zeros(len(pairs), dtype=np.int64)
        idx_parts, val_parts, base = [], [], 0
        for si in range(n_slices):
            ip = np.load(tmp / f"{si:05d}_indptr.npy", mmap_mode="r")[a:b + 1]
            lo, hi = int(ip[0]), int(ip[-1])
            idx_parts.append(np.load(tmp / f"{si:05d}_indices.npy", mmap_mode="r")[lo:hi])
            val_parts.append(np.load(tmp / f"{si:05d}_data.npy", mmap_mode="r")[lo:hi])
            sel = pairs[:, 1] == si
            j = pairs[sel, 0]
            starts[sel] = base + ip[j] - lo
            lens[sel] = ip[j + 1] - ip[j]
            base += hi - lo
        flat_idx = np.concatenate(idx_parts) if idx_parts else np.zeros(0, np.int32)
        flat_val = np.concatenate(val_parts) if val_parts else np.zeros(0, np.float32)
        del idx_parts, val_parts
        # gather the (gene, slice) runs in gene-major order
        inner_off = np.zeros(len(pairs) + 1, dtype=np.int64)
        np.cumsum(lens, out=inner_off[1:])
        if inner_off[-1] >= 2**31:
            raise InputError(f"--shard-genes {shard_genes}: a shard would hold {inner_off[-1]} "
                             "values (> 2^31); use fewer genes per shard")
        gather = np.repeat(starts - inner_off[:-1], lens) + np.arange(inner_off[-1])
        empty_frames += int((lens == 0).sum())
        gathered = flat_val[gather]
        val_gene = np.repeat(pairs[:, 0], lens)  # gene (in shard) of each gathered value
        val_train = np.repeat(train_slice[pairs[:, 1]], lens)
        q, _ = units.grouped_quantile(gathered[val_train], val_gene[val_train], b - a,
                                      units.GENE_SCALE_QUANTILE)
        gene_scale[a:b] = np.maximum(q, units.GENE_SCALE_FLOOR)
        u = np.minimum(gathered[val_train] / gene_scale[a:b][val_gene[val_train]], 1.0)
        u_sum, u_sq = u_sum + float(u.sum()), u_sq + float((u * u).sum())
        del u, val_gene, val_train
        outer_off = np.zeros(b - a + 1, dtype=np.int64)
        np.cumsum(np.bincount(pairs[:, 0], minlength=b - a), out=outer_off[1:])
        slice_idx = pa.ListArray.from_arrays(pa.array(outer_off.astype(np.int32)),
                                             pa.array(pairs[:, 1].astype(np.int32)))
        inner_off32 = pa.array(inner_off.astype(np.int32))
        outer_off32 = pa.array(outer_off.astype(np.int32))
        indices = pa.ListArray.from_arrays(outer_off32, pa.ListArray.from_arrays(
            inner_off32, pa.array(flat_idx[gather], pa.int32())))
        values = pa.ListArray.from_arrays(outer_off32, pa.ListArray.from_arrays(
            inner_off32, pa.array(gathered, pa.float32())))
        del flat_idx, flat_val, gather, gathered
        table = pa.table({
            "gene": pa.array(vocab[a:b], pa.string()),
            "gene_id": pa.array(np.arange(a, b, dtype=np.int32)),
            "slice_idx": slice_idx,
            "indices": indices,
            "values": values,
            "nnz_fraction": pa.array(nnz_fraction[a:b].astype(np.float32)),
            "mean": pa.array(mean[a:b].astype(np.float32)),
        }, schema=schema)
        pq.write_table(table, data_dir / f"train-{k:05d}-of-{n_shards:05d}.parquet",
                       row_group_size=max(1, min(256, b - a)), use_dictionary=False,
                       compression="zstd", compression_level=1)
        del table, indices, values
    np.save(out / MASKS_NAME, masks)

    n_cells = sum(s["n_cells"] for s in slices_meta)
    counts.update({
        "genes": n_genes,
        "genes_all_zero": int((gene_nnz == 0).sum()),
        "slices": n_slices,
        "cells": int(n_cells),
        "cells_outside_canvas": int(sum(s["n_cells_outside"] for s in slices_meta)),
        "tissue_pixels": int(masks.sum()),
        "pixels_filled_by_closing": int(sum(s["n_filled_pixels"] for s in slices_meta)),
        "empty_frames": int(empty_frames),
        "gene_slices_absent": int((~present).sum()),
    })
    genes_at_time: dict[str, dict[str, bool]] = {}
    times = np.array([s["timepoint"] for s in slices_meta])
    tps = sorted(set(times.tolist()))
    any_at_t = {t: present[times == t].any(axis=0) for t in tps}
    counts["frames_missing"] = int(sum((~v).sum() for v in any_at_t.values()))
    for gi, g in enumerate(vocab):
        genes_at_time[g] = {str(t): bool(any_at_t[t][gi]) for t in tps}
    if vmax == -math.inf:
        vmin = vmax = 0.0
    value_max = VALUE_MAX
    if vmax > VALUE_MAX:
        value_max = float(math.ceil(vmax))
        logger.warning("expression reaches %.3g > %.1f: value_max set to %.1f", vmax, VALUE_MAX,
                       value_max)
    spatial_signal = np.round(_spatial.mean_defined(moran[train_slice]) if train_slice.any()
                              else np.zeros(n_genes), 6)
    spatial_amplitude = np.round(_spatial.mean_defined(amplitude[train_slice])
                                 if train_slice.any() else np.zeros(n_genes), 6)
    threshold = _spatial.spatial_threshold(moran_null_var)
    variable = _spatial.spatially_variable(spatial_signal, spatial_amplitude, threshold=threshold)
    stats = units.centered_params(u_sum, u_sq, u_n)
    if units.DEFAULT_MAPPING == "centered":
        model_units = stats
    else:
        model_units = {"mapping": units.DEFAULT_MAPPING, "tissue_mean": stats["center"],
                       "tissue_std": stats["std"]}
    logger.info("per-gene scale (%s): median %.3g, %d genes at the floor; spatially variable: "
                "%d of %d genes (mean Moran's I >= %g, amplitude >= %g); model units: %s",
                units.gene_scale_rule(),
                float(np.median(gene_scale)) if n_genes else 0.0,
                int((gene_scale <= units.GENE_SCALE_FLOOR).sum()),
                int(variable.sum()), n_genes, threshold, _spatial.SPATIAL_AMPLITUDE_THRESHOLD,
                model_units["mapping"])
    return {
        "format_version": FORMAT_VERSION,
        "resolution": resolution,
        "genes": list(vocab),
        "slices": slices_meta,
        "normalization": norms.pop() if len(norms) == 1 else "mixed",
        "value_max": value_max,
        "value_range": [float(vmin), float(vmax)],
        "gene_scale": [round(float(v), 6) for v in gene_scale],
        "gene_scale_floor": float(units.GENE_SCALE_FLOOR),
        "gene_scale_rule": units.gene_scale_rule(),
        "spatial_signal": [float(v) for v in spatial_signal],
        "spatially_variable": [bool(v) for v in variable],
        "spatial_threshold": threshold,
        "spatial_amplitude": [float(v) for v in spatial_amplitude],
        "spatial_amplitude_threshold": float(_spatial.SPATIAL_AMPLITUDE_THRESHOLD),
        "model_units": model_units,
        "nnz_fraction_mean": float(nnz_fraction.mean()) if n_genes else 0.0,
        "shard_genes": int(shard_genes),
        "_genes_at_time": genes_at_time,
    }


def _log_counts(meta: dict) -> None:
    c = meta["counts"]
    logger.info("prepared %d genes x %d slices at %d time points (%s), %dx%d canvas",
                c["genes"], c["slices"], len(meta["timepoints"]), meta["normalization"],
                meta["resolution"], meta["resolution"])
    dropped = {k: v for k, v in c.items() if k not in ("genes", "slices", "cells", "tissue_pixels",
                                                        "genes_input") and v}
    if dropped:
        logger.info("dropped / empty: %s", ", ".join(f"{k}={v}" for k, v in dropped.items()))


def _dataset_card(meta: dict, n_shards: int) -> str:
    c = meta["counts"]
    tps = ", ".join(f"{t:g}" for t in meta["timepoints"])
    held = ", ".join(f"{t:g}" for t in meta["holdout"]["timepoints"]) or "none"
    lines = [
        "---",
        "configs:",
        "- config_name: default",
        "  data_files:",
        "  - split: train",
        "    path: data/train-*.parquet",
        "tags:",
        "- spatial-transcriptomics",
        "- videogene",
        "---",
        "",
        "# videogene gene-video dataset",
        "",
        "Spatial transcriptomics slices rasterized into one short video per gene (frames = time",
        "points), written by `videogene prepare`. One Parquet row per gene: `gene`, `gene_id`,",
        "`slice_idx` (slices where the gene is stored), sparse frames as `indices` (flat row-major",
        "pixel index) and `values` (mean log-expression per pixel), `nnz_fraction`, `mean`.",
        "Slice metadata, alignment transforms and hold-out are in `videogene_meta.json`; tissue",
        "masks in `masks.npy` (bool, n_slices x H x W).",
        "",
        "```python",
        "from datasets import load_dataset",
        "ds = load_dataset(\"path/or/hub-id\", streaming=True, split=\"train\")",
        "from videogene.data import GeneVideoDataset",
        "stream = GeneVideoDataset(\"path/or/hub-id\")",
        "```",
        "",
        "| | |",
        "|---|---|",
        f"| genes | {c['genes']} |",
        f"| slices | {c['slices']} |",
        f"| time points | {tps} |",
        f"| canvas | {meta['resolution']} x {meta['resolution']} |",
        f"| cells | {c['cells']} ({c['cells_outside_canvas']} outside the canvas) |",
        f"| normalization | {meta['normalization']} |",
        f"| value range | {meta['value_range'][0]:.3g} .. {meta['value_range'][1]:.3g} |",
        f"| per-gene scale | {meta['gene_scale_rule']} |",
        f"| spatially variable genes | {sum(meta['spatially_variable'])} (mean Moran's I >= "
        f"{meta['spatial_threshold']:.3g} and spatial amplitude >= "
        f"{meta['spatial_amplitude_threshold']:g}) |",
        f"| model units | {meta['model_units']['mapping']} (`videogene.data.units`) |",
        f"| held-out time points | {held} |",
        f"| shards | {n_shards} |",
        "",
        "Counts of everything dropped or empty (`meta[\"counts\"]`):",
        "",
        "```json",
        json.dumps(c, indent=1),
        "```",
        "",
    ]
    return "\n".join(lines)
