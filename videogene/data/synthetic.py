"""The built-in synthetic spatiotemporal atlas: the embedded default and the ground truth.

A MOSTA-like atlas of a synthetic mouse embryo from E9.5 to E16.5 (docs/design.md §1):
an embryo whose outline grows and changes shape, tissue domains (organs) that appear at
different days, grow and move, several sections per time point cut at different planes
(different organs visible, random rotation, mild non-rigid deformation, different bin
counts), and gene programs of six kinds (``domain``, ``temporal``, ``gradient``,
``scattered``, ``housekeeping``, ``silent``) with gene-level scales over orders of magnitude.
Counts per bin are negative binomial with library-size variation, then normalize_total +
log1p, so zeros are real dropout.

Everything is a continuous function of developmental time and all randomness of a slice
comes from ``(seed, time, slice index)``, so :func:`expected_expression` gives the noise-free
truth at any time and reproduces the exact bins of any atlas slice.

    >>> cfg = SynthConfig(n_genes=200, slices_per_timepoint=2, bins_per_slice=800)
    >>> adata = make_atlas(cfg)                          # in memory
    >>> summary = write_atlas(cfg, "runs/synth")         # atlas.h5ad + atlas_preview.png
    >>> truth = expected_expression(cfg, 12.0, slice_index=0, genes=["Sox2", "Hba-x"])
    >>> draws = redraw_expression(cfg, 12.0, genes=["Sox2"], n_draws=4)  # new count noise
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..errors import InputError
from ..utils import get_logger
from ._synth_anatomy import (
    ANNOTATION_CATEGORIES,
    DOMAIN_NAMES,
    MESENCHYME,
    STREAM_COUNTS,
    STREAM_LIBRARY,
    STREAM_REDRAW,
    STREAM_SCATTER,
    Anatomy,
    SliceGeometry,
    slice_geometry,
    slice_rng,
)
from ._synth_programs import KINDS, Program, build_programs, profile_value, spatial_patterns

__all__ = ["SynthConfig", "make_atlas", "write_atlas", "expected_expression",
           "redraw_expression", "gene_table", "slice_names"]

logger = get_logger("videogene.data.synthetic")

DEFAULT_TIMEPOINTS = tuple(9.5 + i for i in range(8))


@dataclass(frozen=True)
class SynthConfig:
    """Everything that defines a synthetic atlas (JSON-able via :meth:`to_dict`).

    Size: ``n_genes``, ``timepoints`` (days, strictly increasing, > 0),
    ``slices_per_timepoint``, ``bins_per_slice`` (about this many bins in a midline section;
    lateral sections hold fewer, later days somewhat more), ``seed``.
    Biology: the fractions of genes per program kind (``silent`` takes the rest), the
    number of programs per kind, the gene scale spread (``scale_sigma``, log-normal),
    counts (``library_size``: mean UMIs per bin at 2,000 genes, scaled linearly below that
    and with the square root above, so small test atlases stay as sparse as the default;
    ``library_sigma``; NB ``dispersion``),
    embryo size and growth, and the sectioning (plane spread and tilt, rotation, flips,
    deformation). ``gene_block`` is the number of genes generated at a time (memory knob;
    part of the random streams, so changing it changes the noise).
    """

    n_genes: int = 2000
    timepoints: tuple[float, ...] = DEFAULT_TIMEPOINTS
    slices_per_timepoint: int = 3
    bins_per_slice: int = 3000
    seed: int = 0
    frac_domain: float = 0.35
    frac_temporal: float = 0.15
    frac_gradient: float = 0.10
    frac_scattered: float = 0.10
    frac_housekeeping: float = 0.04
    n_temporal_programs: int = 6
    n_gradient_programs: int = 4
    n_scattered_programs: int = 4
    markers: bool = True
    scale_sigma: float = 1.2
    leak: float = 0.004
    time_shift_sd: float = 0.3
    library_size: float = 2000.0
    library_sigma: float = 0.35
    dispersion: float = 2.0
    target_sum: float = 1e4
    max_value: float = 9.0
    embryo_length_um: float = 3000.0
    growth_rate: float = 0.12
    plane_spread: float = 0.3
    plane_tilt: float = 0.06
    max_rotation_deg: float = 180.0
    flip_prob: float = 0.0
    deformation: float = 0.03
    outline_noise: float = 0.06
    gene_block: int = 1024

    def __post_init__(self) -> None:
        try:
            tps = tuple(float(t) for t in np.atleast_1d(np.asarray(self.timepoints, dtype=float)))
        except (TypeError, ValueError):
            raise InputError(f"synthetic atlas: timepoints: not numbers: {self.timepoints!r}") from None
        object.__setattr__(self, "timepoints", tps)
        self.validate()

    def validate(self) -> None:
        def bad(arg: str, msg: str):
            raise InputError(f"synthetic atlas: {arg}: {msg}")

        if not isinstance(self.n_genes, (int, np.integer)) or self.n_genes < 1:
            bad("n_genes", f"need at least 1 gene, got {self.n_genes!r}")
        tps = self.timepoints
        if not isinstance(tps, tuple) or len(tps) == 0:
            bad("timepoints", "need at least one time point")
        if not all(math.isfinite(t) for t in tps):
            bad("timepoints", f"not finite: {list(tps)}")
        if any(t <= 0 for t in tps):
            bad("timepoints", f"must be positive developmental days, got {list(tps)}")
        if any(b <= a for a, b in zip(tps, tps[1:])):
            bad("timepoints", f"must be strictly increasing, got {list(tps)}")
        if self.slices_per_timepoint < 1:
            bad("slices_per_timepoint", f"need at least 1, got {self.slices_per_timepoint}")
        if self.bins_per_slice < 50:
            bad("bins_per_slice", f"need at least 50 bins per slice, got {self.bins_per_slice}")
        if self.seed < 0:
            bad("seed", f"must be >= 0, got {self.seed}")
        fr = [self.frac_domain, self.frac_temporal, self.frac_gradient, self.frac_scattered,
              self.frac_housekeeping]
        if any(f < 0 for f in fr) or sum(fr) > 1 + 1e-9:
            bad("frac_*", f"kind fractions must be >= 0 and sum to <= 1, got {fr}")
        for name in ("n_temporal_programs", "n_gradient_programs", "n_scattered_programs"):
            if getattr(self, name) < 1:
                bad(name, "need at least 1")
        for name in ("library_size", "dispersion", "target_sum", "max_value",
                     "embryo_length_um", "gene_block"):
            if not getattr(self, name) > 0:
                bad(name, f"must be > 0, got {getattr(self, name)}")
        for name in ("scale_sigma", "leak", "time_shift_sd", "library_sigma", "plane_spread",
                     "plane_tilt", "max_rotation_deg", "deformation", "outline_noise",
                     "growth_rate"):
            if getattr(self, name) < 0:
                bad(name, f"must be >= 0, got {getattr(self, name)}")
        if not 0 <= self.flip_prob <= 1:
            bad("flip_prob", f"must be in [0, 1], got {self.flip_prob}")

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["timepoints"] = list(self.timepoints)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> SynthConfig:
        """Inverse of :meth:`to_dict`; also accepts what comes back from an .h5ad ``uns``."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - set(fields))
        if unknown:
            raise InputError(f"synthetic config: unknown option(s) {unknown}")
        kw = {}
        for k, v in d.items():
            if isinstance(v, np.ndarray):
                v = v.tolist()
            elif isinstance(v, np.generic):
                v = v.item()
            if k == "timepoints":
                v = tuple(float(t) for t in np.atleast_1d(v))
            kw[k] = v
        return cls(**kw)

    @property
    def library_umis(self) -> float:
        r = self.n_genes / 2000.0
        return self.library_size * (r if r < 1 else math.sqrt(r))

    @property
    def n_slices(self) -> int:
        return len(self.timepoints) * self.slices_per_timepoint


def slice_names(cfg: SynthConfig) -> list[str]:
    """Atlas slice names in atlas order ("E9.5_s1", "E9.5_s2", ...)."""
    return [f"E{t:g}_s{k + 1}" for t in cfg.timepoints for k in range(cfg.slices_per_timepoint)]


# ----------------------------------------------------------------------------- genes
@dataclass
class _Genes:
    names: np.ndarray  # (G,) str
    program: np.ndarray  # (G,) int
    kind: np.ndarray  # (G,) str
    program_name: np.ndarray  # (G,) str
    scale: np.ndarray  # (G,) float64
    leak: np.ndarray
    shift: np.ndarray  # days added to t in the temporal profile
    theta: np.ndarray  # NB dispersion (size) per gene
    programs: list[Program]


_KIND_SCALE = {"domain": 1.0, "temporal": 1.0, "gradient": 1.0, "scattered": 2.0,
               "housekeeping": 8.0, "silent": 0.05}


def _build_genes(cfg: SynthConfig) -> _Genes:
    rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, 0, 3]))
    programs = build_programs(cfg)
    g = cfg.n_genes
    fracs = {"domain": cfg.frac_domain, "temporal": cfg.frac_temporal,
             "gradient": cfg.frac_gradient, "scattered": cfg.frac_scattered,
             "housekeeping": cfg.frac_housekeeping}
    counts = {k: int(math.floor(g * f)) for k, f in fracs.items()}
    counts["silent"] = g - sum(counts.values())
    prog_of: list[int] = []
    marker_of: list[str | None] = []
    for kind in KINDS:
        idx = [j for j, p in enumerate(programs) if p.kind == kind]
        per = [0] * len(idx)
        for i in range(counts[kind]):
            per[i % len(idx)] += 1
        for j, n in zip(idx, per):
            ms = programs[j].markers if cfg.markers else ()
            for i in range(n):
                prog_of.append(j)
                marker_of.append(ms[i] if i < len(ms) else None)
    order = rng.permutation(g)  # var order must not reveal the programs
    prog = np.asarray(prog_of, dtype=np.int64)[order]
    markers = [marker_of[i] for i in order]
    kind = np.array([programs[j].kind for j in prog], dtype=object)
    width = max(5, len(str(g)))
    names = np.array([m if m else f"Syn{i + 1:0{width}d}" for i, m in enumerate(markers)],
                     dtype=object)
    scale = np.exp(rng.normal(0.0, cfg.scale_sigma, g)) * np.array([_KIND_SCALE[k] for k in kind])
    is_marker = np.array([m is not None for m in markers])
    scale[is_marker] *= 4.0
    leak = cfg.leak * np.exp(rng.normal(0.0, 0.7, g))
    leak[kind == "silent"] = 1.0
    leak[kind == "housekeeping"] = 0.0
    shift = rng.normal(0.0, cfg.time_shift_sd, g)
    shift[~np.isin(kind, ["temporal", "scattered"])] = 0.0
    theta = cfg.dispersion * np.exp(rng.normal(0.0, 0.4, g))
    return _Genes(names=names, program=prog, kind=kind,
                  program_name=np.array([programs[j].name for j in prog], dtype=object),
                  scale=scale, leak=leak, shift=shift, theta=theta, programs=programs)


def gene_table(cfg: SynthConfig) -> pd.DataFrame:
    """The atlas ``var``: program (int), program_kind, program_name, scale, dispersion."""
    genes = _build_genes(cfg)
    return _var_frame(genes)


def _var_frame(genes: _Genes) -> pd.DataFrame:
    var = pd.DataFrame({
        "program": genes.program.astype(np.int64),
        "program_kind": pd.Categorical(genes.kind.astype(str), categories=list(KINDS)),
        "program_name": genes.program_name.astype(str),
        "scale": genes.scale.astype(np.float64),
        "dispersion": genes.theta.astype(np.float64),
    }, index=pd.Index(genes.names.astype(str), name="gene"))
    return var


# ----------------------------------------------------------------------------- one slice
@dataclass
class _SliceModel:
    geom: SliceGeometry
    patterns: np.ndarray  # (n, P)
    temporal: np.ndarray  # (G,) T_p(t + shift) of each gene
    total_rate: np.ndarray  # (n,) sum over all genes of the relative rate
    library: np.ndarray  # (n,) expected UMIs per bin
    annotation: np.ndarray  # (n,) str


class _Model:
    """Seed-specific anatomy + gene table; evaluates slices."""

    def __init__(self, cfg: SynthConfig):
        self.cfg = cfg
        self.anatomy = Anatomy(cfg.seed, outline_noise=cfg.outline_noise)
        self.genes = _build_genes(cfg)

    def slice(self, t: float, k: int) -> _SliceModel:
        cfg, genes = self.cfg, self.genes
        geom = slice_geometry(self.anatomy, cfg, t, k)
        memb = self.anatomy.domain_membership(geom.u, t)
        pat = spatial_patterns(
            genes.programs, geom.u, geom.depth, memb,
            lambda j: slice_rng(cfg.seed, STREAM_SCATTER, t, k, j))
        temporal = np.empty(len(genes.names))
        for j, p in enumerate(genes.programs):
            sel = genes.program == j
            if sel.any():
                temporal[sel] = profile_value(p.profile, t + genes.shift[sel])
        # sum_g scale_g (leak_g + S_p(g) T_g) factorizes over programs
        w = np.bincount(genes.program, weights=genes.scale * temporal,
                        minlength=len(genes.programs))
        total = pat @ w + float((genes.scale * genes.leak * temporal).sum())
        rng = slice_rng(cfg.seed, STREAM_LIBRARY, t, k)
        n = len(geom.u)
        edge = 0.6 + 0.4 / (1.0 + np.exp(-geom.depth / 0.08))  # thinner tissue at the edge
        lib = cfg.library_umis * edge * np.exp(
            rng.normal(-0.5 * cfg.library_sigma ** 2, cfg.library_sigma, n))
        best = memb.argmax(axis=1) if memb.shape[1] else np.zeros(n, dtype=int)
        has = memb.max(axis=1, initial=0.0) > 0.5
        ann = np.where(has, np.asarray(DOMAIN_NAMES, dtype=object)[best], MESENCHYME)
        return _SliceModel(geom, pat, temporal, total, lib, ann)

    def relative_rate(self, sm: _SliceModel, cols: np.ndarray) -> np.ndarray:
        """Fraction of a bin's expected counts going to genes ``cols``: (n, len(cols))."""
        g = self.genes
        s = sm.patterns[:, g.program[cols]] + g.leak[cols]
        return s * (g.scale[cols] * sm.temporal[cols] / sm.total_rate[:, None])


def _sample_nb(mean: np.ndarray, theta: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Negative binomial counts (int32, same shape as ``mean``), theta per column.

    Inverse-CDF sampling driven by one uniform per entry: cheap when most entries are 0
    (the common case); large means fall back to numpy's sampler.
    """
    th = np.broadcast_to(theta, mean.shape)
    u = rng.random(mean.shape)
    p0 = np.exp(th * np.log(th / (th + mean)))
    out = np.zeros(mean.shape, dtype=np.int32)
    idx = np.flatnonzero(u > p0)
    if idx.size == 0:
        return out
    m = mean.ravel()[idx]
    tt = th.ravel()[idx]
    big = m > 40.0
    flat = out.ravel()
    if big.any():
        bi = idx[big]
        # conditional on X > 0: draw until positive is not needed since P(X=0) is negligible
        flat[bi] = rng.negative_binomial(tt[big], tt[big] / (tt[big] + m[big]))
    idx, m, tt, uu = idx[~big], m[~big], tt[~big], u.ravel()[idx[~big]]
    pmf = p0.ravel()[idx]
    cdf = pmf.copy()
    r = m / (tt + m)
    k = 0
    while idx.size:
        k += 1
        pmf = pmf * (k - 1 + tt) / k * r
        cdf = cdf + pmf
        done = (uu <= cdf) | (k >= 2000)
        flat[idx[done]] = k
        keep = ~done
        idx, m, tt, uu, pmf, cdf, r = (a[keep] for a in (idx, m, tt, uu, pmf, cdf, r))
    return out


def _slice_counts(model: _Model, sm: _SliceModel, t: float, k: int) -> sp.csr_matrix:
    """Raw NB counts of one slice as CSR (n_bins, n_genes) int32, built gene block by block."""
    cfg = model.cfg
    n, g = len(sm.library), cfg.n_genes
    blocks = []
    for b, start in enumerate(range(0, g, cfg.gene_block)):
        cols = np.arange(start, min(start + cfg.gene_block, g))
        mean = model.relative_rate(sm, cols) * sm.library[:, None]
        rng = slice_rng(cfg.seed, STREAM_COUNTS, t, k, b)
        blocks.append(sp.csr_matrix(_sample_nb(mean, model.genes.theta[cols], rng)))
        del mean
    counts = sp.hstack(blocks, format="csr", dtype=np.int32) if len(blocks) > 1 else blocks[0]
    counts.sort_indices()
    assert counts.shape == (n, g)
    return counts


def _size_factors(totals: np.ndarray, cfg: SynthConfig) -> np.ndarray:
    """normalize_total's per-bin factor ``target_sum / total`` (0 for an empty bin)."""
    return np.divide(cfg.target_sum, totals, out=np.zeros_like(totals), where=totals > 0)


def _log_normalized(counts: np.ndarray, factors: np.ndarray, cfg: SynthConfig) -> np.ndarray:
    """log1p(counts * factors), clipped to ``max_value`` (float64)."""
    return np.minimum(np.log1p(counts * factors), cfg.max_value)


def _normalize(counts: sp.csr_matrix, cfg: SynthConfig) -> tuple[sp.csr_matrix, np.ndarray]:
    """normalize_total(target_sum) + log1p, clipped to max_value; float32 CSR."""
    totals = np.asarray(counts.sum(axis=1)).ravel().astype(np.float64)
    rows = np.repeat(np.arange(counts.shape[0]), np.diff(counts.indptr))
    data = _log_normalized(counts.data, _size_factors(totals, cfg)[rows], cfg)
    x = sp.csr_matrix((data.astype(np.float32), counts.indices.copy(), counts.indptr.copy()),
                      shape=counts.shape)
    return x, totals


def _obs_frame(sm: _SliceModel, totals: np.ndarray) -> pd.DataFrame:
    geom = sm.geom
    n = len(geom.u)
    return pd.DataFrame({
        "timepoint": np.full(n, geom.timepoint, dtype=np.float64),
        "slice": geom.name,
        "annotation": pd.Categorical(sm.annotation.astype(str),
                                     categories=list(ANNOTATION_CATEGORIES)),
        "total_counts": totals.astype(np.float64),
    }, index=pd.Index([f"{geom.name}_{i}" for i in range(n)]))


def _iter_slices(model: _Model, progress: bool) -> Iterator[tuple[_SliceModel, sp.csr_matrix,
                                                                   pd.DataFrame]]:
    cfg = model.cfg
    jobs = [(t, k) for t in cfg.timepoints for k in range(cfg.slices_per_timepoint)]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(jobs), desc="synthetic atlas", unit="slice")
    for t, k in jobs:
        sm = model.slice(t, k)
        counts = _slice_counts(model, sm, t, k)
        x, totals = _normalize(counts, cfg)
        del counts
        if bar is not None:
            bar.update(1)
            bar.set_postfix(slice=sm.geom.name, bins=len(totals))
        yield sm, x, _obs_frame(sm, totals)
    if bar is not None:
        bar.close()


def _finish_obs(frames: list[pd.DataFrame], cfg: SynthConfig) -> pd.DataFrame:
    obs = pd.concat(frames)
    obs["slice"] = pd.Categorical(obs["slice"].astype(str), categories=slice_names(cfg))
    obs["annotation"] = pd.Categorical(obs["annotation"].astype(str),
                                       categories=list(ANNOTATION_CATEGORIES))
    return obs


def make_atlas(cfg: SynthConfig | None = None, *, progress: bool = False):
    """Build the whole atlas in memory (fine up to a few thousand genes).

    Returns an AnnData: ``X`` CSR float32 log1p(normalize_total) in [0, max_value];
    ``obs`` timepoint, slice, annotation, total_counts; ``obsm["spatial"]`` (microns);
    ``var`` program, program_kind, program_name, scale, dispersion; ``uns["synthetic"]``.
    For large gene counts use :func:`write_atlas`, which streams slices to disk.
    """
    import anndata as ad

    cfg = cfg or SynthConfig()
    model = _Model(cfg)
    xs, obs, coords = [], [], []
    for sm, x, o in _iter_slices(model, progress):
        xs.append(x)
        obs.append(o)
        coords.append(sm.geom.spatial)
    adata = ad.AnnData(X=sp.vstack(xs, format="csr", dtype=np.float32),
                       obs=_finish_obs(obs, cfg), var=_var_frame(model.genes))
    adata.obsm["spatial"] = np.concatenate(coords).astype(np.float64)
    adata.uns["synthetic"] = cfg.to_dict()
    return adata


# ----------------------------------------------------------------------------- writing
def _preview_genes(model: _Model) -> list[int]:
    from ..pl.atlas import choose_preview_genes

    return choose_preview_genes(_var_frame(model.genes))


def write_atlas(cfg: SynthConfig | None, out_dir: str | Path, *, preview: bool = True,
                progress: bool = False) -> dict:
    """Write ``out_dir/atlas.h5ad`` (and ``atlas_preview.png``) slice by slice.

    Memory stays about one slice: each slice's CSR is built from gene blocks and appended
    to the on-disk ``X``. Returns a JSON-able summary (paths, n_cells, n_genes, timepoints,
    slices, bins per slice, zero_fraction, value_max, seconds).
    """
    import anndata as ad
    import h5py
    from anndata.io import sparse_dataset, write_elem

    cfg = cfg or SynthConfig()
    t0 = time.perf_counter()
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"{out}: cannot create output folder ({exc.strerror})") from None
    path = out / "atlas.h5ad"
    tmp = out / "atlas.h5ad.partial"
    model = _Model(cfg)
    var = _var_frame(model.genes)
    pcols = _preview_genes(model) if preview else []
    nnz, vmax, obs, coords, prev_x, prev_obs = 0, 0.0, [], [], [], []
    with h5py.File(tmp, "w") as f:
        f.attrs["encoding-type"] = "anndata"
        f.attrs["encoding-version"] = "0.1.0"
        x_elem = None
        for sm, x, o in _iter_slices(model, progress):
            nnz += x.nnz
            if x.nnz:
                vmax = max(vmax, float(x.data.max()))
            if x_elem is None:
                x = x.copy()
                x.indptr = x.indptr.astype(np.int64)  # room for > 2**31 stored values
                write_elem(f, "X", x, dataset_kwargs={"compression": "lzf"})
                x_elem = sparse_dataset(f["X"])
            else:
                x_elem.append(x)
            obs.append(o)
            coords.append(sm.geom.spatial)
            if pcols and sm.geom.name.endswith("_s1"):
                prev_x.append(x[:, pcols].toarray())
                prev_obs.append(o.assign(x=sm.geom.spatial[:, 0], y=sm.geom.spatial[:, 1]))
        obs_df = _finish_obs(obs, cfg)
        write_elem(f, "obs", obs_df)
        write_elem(f, "var", var)
        write_elem(f, "obsm", {"spatial": np.concatenate(coords).astype(np.float64)})
        write_elem(f, "uns", {"synthetic": cfg.to_dict()})
        for key in ("layers", "varm", "obsp", "varp"):
            write_elem(f, key, {})
    tmp.replace(path)
    n_cells = len(obs_df)
    summary = {
        "out": str(out), "atlas": str(path), "preview": None,
        "n_cells": int(n_cells), "n_genes": int(cfg.n_genes),
        "timepoints": list(cfg.timepoints), "slices": int(cfg.n_slices),
        "bins_per_slice": _bins_summary(obs_df),
        "zero_fraction": round(1.0 - nnz / (n_cells * cfg.n_genes), 4),
        "value_max": round(vmax, 4),
    }
    if pcols:
        from ..pl.atlas import plot_atlas_preview

        small = ad.AnnData(X=np.concatenate(prev_x).astype(np.float32),
                           obs=pd.concat(prev_obs), var=var.iloc[pcols].copy())
        small.obsm["spatial"] = small.obs[["x", "y"]].to_numpy()
        png = out / "atlas_preview.png"
        plot_atlas_preview(small, png)
        summary["preview"] = str(png)
    summary["seconds"] = round(time.perf_counter() - t0, 2)
    (out / "atlas_summary.json").write_text(json.dumps(summary, indent=2))
    logger.info("synthetic atlas: %d bins x %d genes, zero fraction %.3f -> %s",
                n_cells, cfg.n_genes, summary["zero_fraction"], path)
    return summary


def _bins_summary(obs: pd.DataFrame) -> dict:
    n = obs.groupby("slice", observed=True).size()
    return {"min": int(n.min()), "mean": round(float(n.mean()), 1), "max": int(n.max())}


# ----------------------------------------------------------------------------- truth
def _resolve_config(config) -> SynthConfig:
    if isinstance(config, SynthConfig):
        return config
    if isinstance(config, dict):
        return SynthConfig.from_dict(config)
    if isinstance(config, (str, Path)):
        p = Path(config)
        if p.is_dir():
            p = p / "atlas.h5ad"
        if not p.exists():
            raise InputError(f"{p}: no such file (expected a synthetic atlas .h5ad)")
        import h5py
        from anndata.io import read_elem

        try:
            with h5py.File(p, "r") as f:
                if "uns" not in f or "synthetic" not in f["uns"]:
                    raise InputError(f"{p}: not a synthetic atlas (no uns['synthetic'])")
                return SynthConfig.from_dict(read_elem(f["uns"]["synthetic"]))
        except OSError as exc:
            raise InputError(f"{p}: cannot read as .h5ad ({exc})") from None
    uns = getattr(config, "uns", None)
    if uns is not None:
        if "synthetic" not in uns:
            raise InputError("AnnData: not a synthetic atlas (no uns['synthetic'])")
        return SynthConfig.from_dict(dict(uns["synthetic"]))
    raise InputError(f"expected_expression: config must be a SynthConfig, dict, AnnData or "
                     f"path, got {type(config).__name__}")


def _nb_expected_log1p(mean: np.ndarray, theta: np.ndarray, c: np.ndarray,
                       n_terms: int = 48) -> np.ndarray:
    """E[log1p(c * X)] for X ~ NB(mean, theta): exact sum over small counts, tail closed off
    at its conditional mean; large means use a second-order expansion."""
    th = np.broadcast_to(theta, mean.shape)
    cc = np.broadcast_to(c, mean.shape)
    p = np.exp(th * np.log(th / (th + mean)))
    r = mean / (th + mean)
    cdf, m_acc, acc = p.copy(), np.zeros_like(mean), np.zeros_like(mean)
    for k in range(1, n_terms + 1):
        p = p * (k - 1 + th) / k * r
        cdf += p
        m_acc += p * k
        acc += p * np.log1p(cc * k)
    tail = np.clip(1.0 - cdf, 0.0, None)
    tail_mean = np.maximum(np.divide(mean - m_acc, tail, out=np.zeros_like(mean),
                                     where=tail > 1e-12), n_terms + 1)
    acc += tail * np.log1p(cc * tail_mean)
    big = mean > n_terms / 3
    if big.any():
        m, t_, c_ = mean[big], th[big], cc[big]
        var = m + m * m / t_
        acc[big] = np.log1p(c_ * m) - 0.5 * var * (c_ / (1 + c_ * m)) ** 2
    return acc


def _slice_query(config, timepoint, slice_index, genes, where: str):
    """Checked arguments of one slice's query: ``(cfg, model, var, t, cols)``."""
    cfg = _resolve_config(config)
    try:
        t = float(timepoint)
    except (TypeError, ValueError):
        raise InputError(f"{where}: timepoint {timepoint!r} is not a number") from None
    if not math.isfinite(t) or t <= 0:
        raise InputError(f"{where}: timepoint must be a positive day, got {t}")
    if int(slice_index) != slice_index or slice_index < 0:
        raise InputError(f"{where}: slice_index must be >= 0, got {slice_index}")
    model = _Model(cfg)
    var = _var_frame(model.genes)
    if genes is None:
        cols = np.arange(cfg.n_genes)
    else:
        genes = [genes] if isinstance(genes, str) else list(genes)
        pos = pd.Series(np.arange(cfg.n_genes), index=var.index)
        missing = [g for g in genes if g not in pos.index]
        if missing:
            raise InputError(f"{where}: unknown gene(s) {missing[:5]}"
                             f"{' ...' if len(missing) > 5 else ''}")
        cols = pos.loc[genes].to_numpy()
    return cfg, model, var, t, cols


def expected_expression(config, timepoint: float, *, slice_index: int = 0,
                        genes: Sequence[str] | None = None, mode: str = "mean"):
    """Noise-free expected log-expression of one slice at any time (docs/design.md §1).

    ``config``: a SynthConfig, its dict, or an AnnData / .h5ad path with ``uns["synthetic"]``.
    For a sampled time point and ``slice_index < slices_per_timepoint`` the bins, plane,
    rotation and deformation are exactly those of that atlas slice; other times get a slice
    generated the same way. ``mode="mean"`` (default) is the expectation of the observed
    value log1p(target_sum * X / library) over the count noise; ``mode="rate"`` is
    log1p(target_sum * expected fraction), i.e. the value without any sampling.
    Returns an AnnData with the atlas layout (dense float32 ``X``; no ``total_counts``).
    """
    import anndata as ad

    if mode not in ("mean", "rate"):
        raise InputError(f"expected_expression: mode must be 'mean' or 'rate', got {mode!r}")
    cfg, model, var, t, cols = _slice_query(config, timepoint, slice_index, genes,
                                            "expected_expression")
    sm = model.slice(t, int(slice_index))
    n = len(sm.library)
    x = np.empty((n, len(cols)), dtype=np.float32)
    for start in range(0, len(cols), cfg.gene_block):
        c = cols[start:start + cfg.gene_block]
        frac = model.relative_rate(sm, c)
        if mode == "rate":
            v = np.log1p(cfg.target_sum * frac)
        else:
            v = _nb_expected_log1p(frac * sm.library[:, None], model.genes.theta[c],
                                   (cfg.target_sum / sm.library)[:, None])
        x[:, start:start + len(c)] = np.minimum(v, cfg.max_value)
    obs = _obs_frame(sm, sm.library).drop(columns="total_counts")
    obs["expected_library"] = sm.library
    out = ad.AnnData(X=x, obs=obs, var=var.iloc[cols].copy())
    out.obsm["spatial"] = sm.geom.spatial.copy()
    out.uns["synthetic"] = cfg.to_dict()
    out.uns["expected"] = {"timepoint": t, "slice_index": int(slice_index), "mode": mode,
                           "sampled": bool(any(abs(t - s) < 1e-9 for s in cfg.timepoints)
                                           and slice_index < cfg.slices_per_timepoint)}
    return out


def redraw_expression(config, timepoint: float, *, slice_index: int = 0,
                      genes: Sequence[str] | None = None, n_draws: int = 1, seed: int = 0):
    """Independent count draws of one slice: what a faithful generative model would sample.

    The slice is that of :func:`expected_expression` (same bins, plane, library sizes); only the
    count noise is drawn again, from its own random stream (``seed``, draw index), so the draws
    are reproducible, independent of each other and of the atlas's own counts. Each draw is
    normalized like the atlas (normalize_total over *all* genes + log1p, clipped).
    The mean of ``n`` draws is what the mean of ``n`` samples of a model that had learned the
    data distribution exactly scores against the truth (the evaluation's ``redraw``).
    Returns a list of ``n_draws`` AnnData with the layout of :func:`expected_expression`
    (dense float32 ``X``, ``obs["total_counts"]`` of the draw).
    """
    import anndata as ad

    if int(n_draws) != n_draws or n_draws < 1:
        raise InputError(f"redraw_expression: n_draws must be >= 1, got {n_draws}")
    if int(seed) != seed or seed < 0:
        raise InputError(f"redraw_expression: seed must be an integer >= 0, got {seed}")
    cfg, model, var, t, cols = _slice_query(config, timepoint, slice_index, genes,
                                            "redraw_expression")
    sm = model.slice(t, int(slice_index))
    n, n_draws = len(sm.library), int(n_draws)
    x = np.zeros((n_draws, n, len(cols)), dtype=np.float64)  # (draws, bins, genes) counts
    totals = np.zeros((n_draws, n), dtype=np.float64)
    for b, start in enumerate(range(0, cfg.n_genes, cfg.gene_block)):
        block = np.arange(start, min(start + cfg.gene_block, cfg.n_genes))
        mean = model.relative_rate(sm, block) * sm.library[:, None]
        j = np.flatnonzero((cols >= block[0]) & (cols <= block[-1]))
        for d in range(n_draws):
            rng = slice_rng(cfg.seed, STREAM_REDRAW, t, int(slice_index), int(seed), d, b)
            counts = _sample_nb(mean, model.genes.theta[block], rng)
            totals[d] += counts.sum(axis=1)
            x[d][:, j] = counts[:, cols[j] - block[0]]
    out = []
    for d in range(n_draws):
        xd = _log_normalized(x[d], _size_factors(totals[d], cfg)[:, None], cfg).astype(np.float32)
        a = ad.AnnData(X=xd, obs=_obs_frame(sm, totals[d]), var=var.iloc[cols].copy())
        a.obsm["spatial"] = sm.geom.spatial.copy()
        a.uns["synthetic"] = cfg.to_dict()
        a.uns["redraw"] = {"timepoint": t, "slice_index": int(slice_index), "seed": int(seed),
                           "draw": d}
        out.append(a)
    return out
