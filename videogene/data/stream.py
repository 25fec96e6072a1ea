"""Reading a prepared dataset: metadata, masks, dense canvases and the torch training stream.

The dataset layout and the example dict are fixed in docs/design.md sections 2-3.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..utils import get_logger
from .choices import GENE_SAMPLING, SLICE_DRAW
from .meta import MASKS_NAME, DatasetMeta, dataset_file
from .units import gene_scales, model_units, to_model_units, zero_level

logger = get_logger("videogene.data.stream")


def load_metadata(dataset_dir: str | Path) -> DatasetMeta:
    """The dataset's ``videogene_meta.json`` (local folder or Hub dataset id)."""
    return DatasetMeta.load(dataset_dir)


def load_masks(dataset_dir: str | Path) -> np.ndarray:
    """Tissue masks, bool ``(n_slices, H, W)`` in the slice order of ``meta["slices"]``."""
    f = dataset_file(dataset_dir, MASKS_NAME)
    return np.load(f).astype(bool)


def _shard_files(dataset_dir: Path) -> list[Path]:
    files = sorted((dataset_dir / "data").glob("train-*.parquet"))
    if not files:
        raise InputError(f"{dataset_dir}: no data/train-*.parquet shards")
    return files


def _decode_table(table) -> Iterator[tuple[int, str, float, np.ndarray, list, list]]:
    """Parquet rows -> (gene_id, gene, nnz_fraction, slice_idx, [indices], [values])."""
    gene_ids = table.column("gene_id").to_numpy()
    names = table.column("gene").to_pylist()
    nnz = table.column("nnz_fraction").to_numpy()
    sl = table.column("slice_idx").combine_chunks()
    sl_off, sl_flat = sl.offsets.to_numpy(), sl.values.to_numpy()
    ind = table.column("indices").combine_chunks()
    val = table.column("values").combine_chunks()
    ind_off, ind_inner = ind.offsets.to_numpy(), ind.values
    val_inner = val.values
    ii_off, ii_flat = ind_inner.offsets.to_numpy(), ind_inner.values.to_numpy()
    vi_off, vi_flat = val_inner.offsets.to_numpy(), val_inner.values.to_numpy()
    for r in range(table.num_rows):
        a, b = ind_off[r], ind_off[r + 1]
        idx = [ii_flat[ii_off[j]:ii_off[j + 1]] for j in range(a, b)]
        vals = [vi_flat[vi_off[j]:vi_off[j + 1]] for j in range(a, b)]
        yield (int(gene_ids[r]), names[r], float(nnz[r]), sl_flat[sl_off[r]:sl_off[r + 1]], idx,
               vals)


def read_gene_canvases(dataset_dir: str | Path, genes: Sequence[str] | None = None,
                       ) -> Iterator[tuple[str, np.ndarray]]:
    """Per gene a dense float32 ``(n_slices, H, W)`` array in expression units.

    Vocabulary order, or the order of ``genes`` (unknown names raise InputError). Zero
    outside tissue and where not expressed, and also in slices that do not store the gene
    (a ``--gene-set union`` dataset): :func:`stored_slices` tells them apart.
    """
    import pyarrow.parquet as pq

    dataset_dir = Path(dataset_dir)
    meta = load_metadata(dataset_dir)
    res, n_slices = meta.resolution, len(meta.slices)
    files = _shard_files(dataset_dir)

    def canvas(idx_list, val_list, sidx):
        out = np.zeros((n_slices, res * res), dtype=np.float32)
        for s, ix, vv in zip(sidx, idx_list, val_list, strict=True):
            out[int(s), ix] = vv
        return out.reshape(n_slices, res, res)

    if genes is None:
        for f in files:
            for batch in pq.ParquetFile(f).iter_batches(batch_size=256):
                import pyarrow as pa

                for _, name, _, sidx, idx, vals in _decode_table(pa.Table.from_batches([batch])):
                    yield name, canvas(idx, vals, sidx)
        return
    genes = [str(g) for g in genes]
    vocab = meta.gene_index
    unknown = [g for g in genes if g not in vocab]
    if unknown:
        raise InputError(f"{dataset_dir}: genes not in the dataset: {', '.join(unknown[:5])}")
    found: dict[int, np.ndarray] = {}
    for t in _gene_rows(files, {vocab[g] for g in genes}):
        for gid, _, _, sidx, idx, vals in _decode_table(t):
            found[gid] = canvas(idx, vals, sidx)
    for g in genes:
        yield g, found[vocab[g]]


def _gene_rows(files: Sequence[Path], wanted: set[int], columns: Sequence[str] | None = None):
    """Tables of the shard rows whose ``gene_id`` is in ``wanted``: only the row groups whose
    ``gene_id`` range (Parquet statistics) can hold a wanted id are read, and reading stops
    once every id was found, so a few genes cost a few row groups, not the whole atlas."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    left = set(wanted)
    cols = None if columns is None else list(dict.fromkeys(["gene_id", *columns]))
    for f in files:
        if not left:
            return
        pf = pq.ParquetFile(f)
        md = pf.metadata
        col = pf.schema_arrow.get_field_index("gene_id")  # a flat column: its leaf index too
        ids = np.array(sorted(left))
        groups = []
        for i in range(md.num_row_groups):
            st = md.row_group(i).column(col).statistics
            if st is None or not st.has_min_max:
                groups.append(i)
                continue
            k = int(np.searchsorted(ids, st.min))
            if k < ids.size and ids[k] <= st.max:
                groups.append(i)
        if not groups:
            continue
        t = pf.read_row_groups(groups, columns=cols)
        t = t.filter(pc.is_in(t.column("gene_id"), value_set=_pa_int32(sorted(left))))
        if t.num_rows:
            left -= set(t.column("gene_id").to_pylist())
            yield t


def stored_slices(dataset_dir: str | Path, genes: Sequence[str] | None = None
                  ) -> dict[str, np.ndarray]:
    """Per gene a bool ``(n_slices,)``: the slices that store it (``slice_idx``).

    Every slice for a dataset prepared from files with one gene set; with ``--gene-set union``
    a gene is not stored in the slices of a file that lacks it, and :func:`read_gene_canvases`
    shows 0 there: not measured, not unexpressed. Reads only the ``gene`` and ``slice_idx``
    columns. All genes, or those of ``genes`` (unknown names raise InputError).
    """
    import pyarrow.parquet as pq

    dataset_dir = Path(dataset_dir)
    meta = load_metadata(dataset_dir)
    n_slices = len(meta.slices)
    if genes is not None:
        genes = [str(g) for g in genes]
        unknown = [g for g in genes if g not in meta.gene_index]
        if unknown:
            raise InputError(f"{dataset_dir}: genes not in the dataset: {', '.join(unknown[:5])}")
    out: dict[str, np.ndarray] = {}
    files = _shard_files(dataset_dir)
    tables = ((pq.read_table(f, columns=["gene", "slice_idx"]) for f in files) if genes is None
              else _gene_rows(files, {meta.gene_index[g] for g in genes}, ["gene", "slice_idx"]))
    for t in tables:
        sl = t.column("slice_idx").combine_chunks()
        off, flat = sl.offsets.to_numpy(), sl.values.to_numpy()
        for r, name in enumerate(t.column("gene").to_pylist()):
            row = np.zeros(n_slices, dtype=bool)
            row[flat[off[r]:off[r + 1]]] = True
            out[name] = row
    return out if genes is None else {g: out[g] for g in genes}


def _pa_int32(values):
    import pyarrow as pa

    return pa.array(values, pa.int32())


# ----------------------------------------------------------------------------- stream
def _dist_info(rank: int | None, world_size: int | None) -> tuple[int, int]:
    if rank is not None and world_size is not None:
        return int(rank), int(world_size)
    r, w = 0, 1
    try:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            r, w = dist.get_rank(), dist.get_world_size()
        else:
            from accelerate.state import PartialState

            if PartialState._shared_state:  # only when accelerate was already set up
                st = PartialState()
                r, w = st.process_index, st.num_processes
    except ImportError:
        pass
    return (int(rank) if rank is not None else r), (int(world_size) if world_size is not None else w)


def _torch_iterable_base():
    import torch.utils.data

    return torch.utils.data.IterableDataset


def _pick(cand: np.ndarray, sidx: np.ndarray, position: float | None,
          rng: np.random.Generator) -> int:
    """Row position of the slice a visit shows for one day: one of ``cand`` at random
    (``position`` None) or the one at ``position`` in [0, 1) of the day's stored slices in
    dataset order."""
    if cand.size == 1:
        return int(cand[0])
    if position is None:
        return int(cand[rng.integers(cand.size)])
    return int(cand[np.argsort(sidx[cand], kind="stable")][int(position * cand.size)])


class GeneVideoDataset(_torch_iterable_base()):
    """Gene videos for training: a torch ``IterableDataset`` over a prepared dataset.

    Each example is the dict of docs/design.md section 3 (``video``, ``tissue_mask``,
    ``frame_times``, ``frame_present``, ``gene_id``, ``nnz_fraction``, ``sample_weight``).
    ``video`` is in model units: each present frame is
    ``videogene.data.units.to_model_units(canvas, gene_scale[gene], meta)``; absent frames and
    pixels outside the tissue hold the model units of zero expression (``units.zero_level``;
    -1 for the ``minus_one_one`` mapping). Datasets without per-gene scales map every gene as
    ``x / value_max * 2 - 1`` (and say so once in the log).
    Genes are split disjointly across processes (``rank``/``world_size``; default from
    torch.distributed, or accelerate's ``PartialState`` if set up) with
    ``datasets.distributed.split_dataset_by_node`` and across DataLoader workers. At every
    visit of a gene one slice per time point is drawn at random (``slice_draw="random"``), or
    one position per visit shared by every time point (``"aligned"``: the day's slices that
    store the gene, in dataset order, the position scaled to their count, so the first slices
    of every day form one video, the in-filling reference slices; for atlases whose sections of
    the same position correspond across days, as in the synthetic atlas), or both
    (``"context_aligned"``: ``video``/``tissue_mask`` from the random draw, as with ``"random"``,
    plus ``video_aligned``/``tissue_mask_aligned`` (and ``context_video_aligned``) from an
    aligned one, which the training loop uses for the examples it gives clean context). All
    randomness comes from ``(seed, epoch, rank, worker)``; ``set_epoch`` before each epoch.

    ``gene_sampling="nnz"`` emits each gene a random number of times with mean
    ``rate = clip((nnz_fraction / mean nnz_fraction) ** sampling_alpha, *rate_clip)`` and
    ``sample_weight = 1 / rate``, so weighted losses stay unbiased while dense genes are
    seen more often; ``"uniform"`` emits each gene once with weight 1; ``"spatial"`` emits the
    dataset's spatially variable genes (``meta["spatially_variable"]``, flagged by ``videogene
    prepare`` from the training slices) once and every other gene with probability
    ``nonspatial_rate``, all with weight 1, so the objective, not only the visits, moves to the
    genes with a layout to learn.
    Frames of the dataset's recorded hold-out (``meta["holdout"]``) and of
    ``holdout_timepoints`` (added to it) are marked absent unless ``include_holdout=True``.
    ``infinite=True`` keeps going epoch after epoch (epoch, epoch + 1, ...).
    ``context_video=True`` adds ``context_video`` (same layout as ``video``): each present
    frame's day image (:func:`videogene.data.holdout.timepoint_image`: the per-pixel mean over
    the slices of its time point that store the gene and whose tissue covers the pixel) on the
    drawn slice's mask, what a ``context_source="timepoint_mean"`` model
    is given for an observed day; the draws, and so ``video``, are the same as without it.
    """

    def __init__(self, path_or_hub_id: str | Path, *, seed: int = 0, shuffle: bool = True,
                 shuffle_buffer: int = 256, gene_sampling: str = "uniform",
                 sampling_alpha: float = 0.5, rate_clip: tuple[float, float] = (0.25, 4.0),
                 nonspatial_rate: float = 0.25,
                 holdout_timepoints: Sequence[float] | None = None, include_holdout: bool = False,
                 infinite: bool = True, rank: int | None = None, world_size: int | None = None,
                 read_batch: int = 32, context_video: bool = False, slice_draw: str = "random"):
        super().__init__()
        if gene_sampling not in GENE_SAMPLING:
            raise InputError(f"gene_sampling: expected one of {', '.join(GENE_SAMPLING)}, "
                             f"got {gene_sampling!r}")
        if slice_draw not in SLICE_DRAW:
            raise InputError(f"slice_draw: expected one of {', '.join(SLICE_DRAW)}, got {slice_draw!r}")
        if not rate_clip[0] > 0 or rate_clip[1] < rate_clip[0]:
            raise InputError(f"rate_clip: expected 0 < low <= high, got {rate_clip}")
        if not 0 < nonspatial_rate <= 1:
            raise InputError(f"nonspatial_rate: expected 0 < rate <= 1, got {nonspatial_rate}")
        self.source = str(path_or_hub_id)
        self.meta = load_metadata(self.source)
        self.masks = load_masks(self.source)
        self.seed, self.shuffle, self.shuffle_buffer = int(seed), bool(shuffle), int(shuffle_buffer)
        self.gene_sampling, self.sampling_alpha = gene_sampling, float(sampling_alpha)
        self.rate_clip = (float(rate_clip[0]), float(rate_clip[1]))
        self.nonspatial_rate = float(nonspatial_rate)
        self.include_holdout, self.infinite = bool(include_holdout), bool(infinite)
        self.rank, self.world_size = rank, world_size
        self.read_batch = int(read_batch)
        self.context_video = bool(context_video)
        self.slice_draw = slice_draw
        self.epoch = 0

        m = self.meta
        self.resolution = m.resolution
        self.timepoints = np.asarray(m.timepoints, dtype=np.float32)
        self.value_max = m.value_max
        self.num_genes = len(m.genes)
        self.units = model_units(m, dataset=self.source)
        self.gene_scale = gene_scales(m, dataset=self.source)  # (genes,) float32
        self.zero_level = zero_level(self.units)
        self.slice_frame = np.array(
            [int(np.argmin(np.abs(self.timepoints - s["timepoint"]))) for s in m["slices"]])
        # the dataset's recorded hold-out always stays out of training; holdout_timepoints adds
        # to it (a config can hold out more, never silently train on a declared hold-out)
        hold = m.get("holdout", {})
        hold_t = sorted({float(t) for t in hold.get("timepoints", [])}
                        | {float(t) for t in (holdout_timepoints or [])})
        self._holdout_pairs = {(str(g), round(float(t), 6)) for g, t in hold.get("frames", [])}
        self.holdout_timepoints = hold_t
        self._holdout_frames = np.array(
            [any(abs(float(t) - h) < 1e-6 for h in hold_t) for t in self.timepoints], dtype=bool)
        nnz_mean = m.get("nnz_fraction_mean")
        self._nnz_mean = float(nnz_mean) if nnz_mean else None
        self._spatial = None
        if gene_sampling == "spatial":
            self._spatial = m.spatially_variable
            if self._spatial is None:
                raise InputError(f"{self.source}: gene_sampling 'spatial' needs meta['spatially_"
                                 f"variable'] (prepared by an older videogene); run `videogene "
                                 f"prepare` again")
        self._hf = None
        self._masks_f = self.masks.reshape(len(self.masks), -1).astype(np.float32)
        # slices covering each pixel per frame: the day image's denominator for a gene that
        # every slice of the day stores (else it is counted over the slices that store it)
        self._day_cover = np.stack([self._masks_f[self.slice_frame == f].sum(axis=0)
                                    for f in range(len(self.timepoints))])
        self._day_slices = np.bincount(self.slice_frame, minlength=len(self.timepoints))

    # -- public knobs
    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _hf_dataset(self):
        if self._hf is None:
            from datasets import load_dataset

            p = Path(self.source).expanduser()
            if p.is_dir():
                files = [str(f) for f in _shard_files(p)]
                self._hf = load_dataset("parquet", data_files={"train": files}, split="train",
                                        streaming=True)
            else:
                self._hf = load_dataset(self.source, split="train", streaming=True)
        return self._hf

    def _visits(self, gene_id: int, nnz_fraction: float) -> tuple[float, float]:
        """``(rate, sample_weight)`` of a gene under ``gene_sampling``: its expected emissions
        per epoch and the loss weight of each."""
        if self.gene_sampling == "uniform":
            return 1.0, 1.0
        if self.gene_sampling == "spatial":  # moves the objective too: no re-weighting
            return (1.0 if self._spatial[gene_id] else self.nonspatial_rate), 1.0
        if self._nnz_mean is None:
            self._nnz_mean = self._compute_nnz_mean()
        base = nnz_fraction / max(self._nnz_mean, 1e-12)
        rate = float(np.clip(base ** self.sampling_alpha if base > 0 else 0.0, *self.rate_clip))
        return rate, (1.0 / rate if rate > 0 else 0.0)

    def _compute_nnz_mean(self) -> float:
        ds = self._hf_dataset().select_columns(["nnz_fraction"])
        vals = [r["nnz_fraction"] for r in ds]
        return float(np.mean(vals)) if vals else 1.0

    # -- iteration
    def _node(self) -> tuple[int, int, int, int]:
        import torch.utils.data

        rank, world = _dist_info(self.rank, self.world_size)
        info = torch.utils.data.get_worker_info()
        wid, nw = (info.id, info.num_workers) if info is not None else (0, 1)
        return rank, world, wid, nw

    def _rows(self, epoch: int, rank: int, world: int, wid: int, nw: int):
        from datasets.distributed import split_dataset_by_node

        ds = self._hf_dataset()
        ds = split_dataset_by_node(ds, rank=rank * nw + wid, world_size=world * nw)
        if self.shuffle:
            # datasets shuffles the shard order by its epoch number (the same order on every
            # node, so the split stays disjoint): give it one derived from (seed, epoch)
            ds.set_epoch(int(np.random.default_rng([self.seed, epoch]).integers(1, 2**31)))
        ds = ds.with_format("arrow")
        rows = (row for table in ds.iter(batch_size=self.read_batch)  # .iter(): no re-split
                for row in _decode_table(table))
        if not self.shuffle:
            yield from rows
            return
        # rows within shards: a shuffle buffer over the decoded (numpy) rows, much cheaper
        # than datasets' buffer, which converts each row to Python lists and back
        rng = np.random.default_rng([self.seed, epoch, rank, wid, 1])
        buf: list = []
        for row in rows:
            if len(buf) < self.shuffle_buffer:
                buf.append(row)
                continue
            j = int(rng.integers(len(buf)))
            buf[j], row = row, buf[j]
            yield row
        rng.shuffle(buf)
        yield from buf

    def _example(self, row, weight: float, rng: np.random.Generator,
                 twin_rng: np.random.Generator | None = None) -> dict:
        import torch

        gid, gene, nnz, sidx, idx, vals = row
        n_f, res = len(self.timepoints), self.resolution
        scale = self.gene_scale[gid]
        frames = self.slice_frame[sidx] if len(sidx) else np.zeros(0, dtype=int)
        days = []  # (frame, row positions of its stored slices) for the frames that train
        for f in range(n_f):
            if not self.include_holdout and (
                    self._holdout_frames[f]
                    or (gene, round(float(self.timepoints[f]), 6)) in self._holdout_pairs):
                continue
            cand = np.flatnonzero(frames == f)
            if cand.size:
                days.append((f, cand))
        present = np.zeros(n_f, dtype=bool)
        present[[f for f, _ in days]] = True
        # the day images do not depend on the draw: one per frame, masked per draw
        day_images = ({f: self._day_image(f, sidx[cand], cand, idx, vals) for f, cand in days}
                      if self.context_video else None)
        position = rng.random() if self.slice_draw == "aligned" else None
        draws = {"": self._draw(row, days, scale, position, rng, day_images)}
        if self.slice_draw == "context_aligned":
            # the aligned twin, from its own generator so that video is the same as with
            # "random"; the training loop uses it for the examples that get clean context
            draws["_aligned"] = self._draw(row, days, scale, twin_rng.random(), twin_rng,
                                           day_images)
        out = {
            "frame_times": torch.from_numpy(self.timepoints.copy()),
            "frame_present": torch.from_numpy(present),
            "gene_id": torch.tensor(gid, dtype=torch.int64),
            "nnz_fraction": torch.tensor(nnz, dtype=torch.float32),
            "sample_weight": torch.tensor(weight, dtype=torch.float32),
        }
        for suffix, arrays in draws.items():
            for key, a in arrays.items():
                out[key + suffix] = torch.from_numpy(a.reshape(n_f, 1, res, res))
        return out

    def _draw(self, row, days, scale: float, position: float | None, rng: np.random.Generator,
              day_images: dict | None) -> dict[str, np.ndarray]:
        """One draw of a visit's slices (:func:`_pick` per day in ``days``): ``video``,
        ``tissue_mask`` and, with ``day_images``, ``context_video`` (each day image on the drawn
        slice's mask), flat ``(F, H * W)``, the frames not in ``days`` at zero expression."""
        _, _, _, sidx, idx, vals = row
        n_f = len(self.timepoints)
        video = np.full((n_f, self.resolution ** 2), self.zero_level, dtype=np.float32)
        mask = np.zeros_like(video)
        context = np.full_like(video, self.zero_level) if day_images is not None else None
        for f, cand in days:
            k = _pick(cand, sidx, position, rng)
            video[f], mask[f] = self._frame(sidx[k], idx[k], vals[k], scale)
            if context is not None:
                context[f] = to_model_units(day_images[f] * mask[f], scale, self.units)
        out = {"video": video, "tissue_mask": mask}
        if context is not None:
            out["context_video"] = context
        return out

    def _frame(self, s: int, idx, vals, scale: float) -> tuple[np.ndarray, np.ndarray]:
        """One stored slice's canvas in model units and its tissue mask, both flat ``(H * W,)``."""
        canvas = np.zeros(self.resolution ** 2, dtype=np.float32)
        canvas[idx] = vals
        return to_model_units(canvas, scale, self.units), self._masks_f[int(s)]

    def _day_image(self, f: int, slices, cand, idx, vals) -> np.ndarray:
        """Frame ``f``'s day image from the row's stored slices of that day (dataset indices
        ``slices``, row positions ``cand``), flat ``(H * W,)`` in expression units: the mean
        over the slices that store the gene and cover the pixel (``timepoint_image`` with
        ``gene_masks``)."""
        total = np.zeros(self.resolution ** 2, dtype=np.float64)
        for k in cand:
            total[idx[k]] += vals[k]
        cover = (self._day_cover[f] if len(slices) == self._day_slices[f]
                 else self._masks_f[slices].sum(axis=0))
        return np.divide(total, cover, out=np.zeros_like(total), where=cover > 0).astype(np.float32)

    def _iter_epoch(self, epoch: int, rank: int, world: int, wid: int, nw: int):
        rng = np.random.default_rng([self.seed, epoch, rank, wid])
        twin_rng = np.random.default_rng([self.seed, epoch, rank, wid, 2])
        mix: list = []
        mix_size = 32 if (self.shuffle and self.gene_sampling == "nnz") else 0
        for row in self._rows(epoch, rank, world, wid, nw):
            rate, weight = self._visits(row[0], row[2])
            n_emit = int(np.floor(rate)) + int(rng.random() < rate - np.floor(rate))
            for _ in range(n_emit):
                if mix_size:
                    mix.append((row, weight))
                    if len(mix) >= mix_size:
                        j = int(rng.integers(len(mix)))
                        mix[j], mix[-1] = mix[-1], mix[j]
                        r, w = mix.pop()
                        yield self._example(r, w, rng, twin_rng)
                else:
                    yield self._example(row, weight, rng, twin_rng)
        while mix:
            j = int(rng.integers(len(mix)))
            mix[j], mix[-1] = mix[-1], mix[j]
            r, w = mix.pop()
            yield self._example(r, w, rng, twin_rng)

    def has_genes(self, epoch: int | None = None) -> bool:
        """Whether this rank's shard of ``epoch`` holds any gene (reads up to its first rows):
        under ``nnz`` or ``spatial`` sampling an epoch of a small shard can emit no example
        although it has genes."""
        rank, world = _dist_info(self.rank, self.world_size)
        return self._shard_has_rows(self.epoch if epoch is None else epoch, rank, world, 0, 1)

    def _shard_has_rows(self, epoch: int, rank: int, world: int, wid: int, nw: int) -> bool:
        return next(self._rows(epoch, rank, world, wid, nw), None) is not None

    def __iter__(self):
        rank, world, wid, nw = self._node()
        epoch = self.epoch
        while True:
            n = 0
            for ex in self._iter_epoch(epoch, rank, world, wid, nw):
                n += 1
                yield ex
            if not self.infinite:
                return
            if n == 0 and not self._shard_has_rows(epoch, rank, world, wid, nw):
                logger.warning("rank %d worker %d: no genes to stream (more workers than genes?)",
                               rank, wid)
                return
            epoch += 1

    def __repr__(self) -> str:
        return (f"GeneVideoDataset({self.source!r}, genes={self.num_genes}, "
                f"frames={len(self.timepoints)}, resolution={self.resolution}, "
                f"gene_sampling={self.gene_sampling!r})")
