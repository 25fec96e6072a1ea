"""Anatomy of the synthetic embryo: body parts, tissue domains and slice geometry.

Everything lives in *normalized body coordinates* ``u = (x, y, z)``: x runs from tail (-1) to
head (+1), y from ventral (-1) to dorsal (+1), z from left to right. A body part or a tissue
domain is a (possibly bilateral) ellipsoid whose centre, semi-axes and in-plane angle move
linearly with developmental time (so every quantity is continuous in time, also between and
slightly beyond the sampled days) and that grows in from nothing around its onset day.
A slice is a plane ``z = z0 + tx * x + ty * y`` through this body, seen through a rigid
transform (rotation, optional flip, stage offset) and a mild smooth non-rigid deformation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

T_EARLY, T_LATE = 9.5, 16.5
MESENCHYME = "mesenchyme"


@dataclass(frozen=True)
class Ellipsoid:
    c0: tuple[float, float, float]
    c1: tuple[float, float, float]
    a0: tuple[float, float, float]
    a1: tuple[float, float, float]
    ang0: float = 0.0
    ang1: float = 0.0
    onset: float = 0.0  # day around which it grows in (0: always there)
    bilateral: bool = False  # mirrored at -z as well


def _e(c0, a0, c1=None, a1=None, ang0=0.0, ang1=None, onset=0.0, bilateral=False) -> Ellipsoid:
    return Ellipsoid(tuple(c0), tuple(c1 or c0), tuple(a0), tuple(a1 or a0), ang0,
                     ang0 if ang1 is None else ang1, onset, bilateral)


# Body outline: the union of these parts (a curled early embryo that straightens, grows a
# head, limbs and a snout, and loses its tail bud).
BODY_PARTS: tuple[Ellipsoid, ...] = (
    _e((0.50, 0.30, 0), (0.42, 0.42, 0.48), (0.52, 0.32, 0), (0.50, 0.48, 0.55)),  # head
    _e((-0.05, -0.05, 0), (0.62, 0.42, 0.45), (-0.12, -0.12, 0), (0.72, 0.58, 0.58),
       ang0=-0.35, ang1=-0.1),  # trunk
    _e((-0.62, 0.28, 0), (0.34, 0.13, 0.15), (-0.86, -0.28, 0), (0.24, 0.08, 0.10),
       ang0=1.0, ang1=-0.6),  # tail
    _e((0.12, -0.48, 0.42), (0.06, 0.05, 0.10), (0.15, -0.62, 0.50), (0.24, 0.20, 0.22),
       onset=10.0, bilateral=True),  # forelimb
    _e((-0.50, -0.45, 0.42), (0.06, 0.05, 0.10), (-0.58, -0.62, 0.50), (0.24, 0.20, 0.22),
       onset=10.8, bilateral=True),  # hindlimb
    _e((0.86, 0.08, 0), (0.10, 0.10, 0.18), (0.98, 0.05, 0), (0.22, 0.18, 0.25),
       onset=12.0),  # snout
)

# Tissue domains (organs). One name may own several ellipsoids.
DOMAINS: dict[str, tuple[Ellipsoid, ...]] = {
    "brain": (_e((0.52, 0.34, 0), (0.30, 0.30, 0.34), (0.52, 0.38, 0), (0.38, 0.36, 0.42)),),
    "neural_tube": (
        _e((0.05, 0.34, 0), (0.40, 0.06, 0.08), (0.0, 0.36, 0), (0.50, 0.06, 0.08),
           ang0=-0.25, ang1=-0.05),
        _e((-0.50, 0.30, 0), (0.30, 0.05, 0.07), (-0.58, 0.12, 0), (0.32, 0.05, 0.07),
           ang0=0.7, ang1=-0.5),
    ),
    "eye": (_e((0.66, 0.22, 0.36), (0.05, 0.05, 0.06), (0.72, 0.24, 0.40), (0.11, 0.11, 0.12),
               onset=10.0, bilateral=True),),
    "heart": (_e((0.18, -0.22, 0), (0.22, 0.22, 0.26), (0.22, -0.18, 0), (0.17, 0.17, 0.22)),),
    "liver": (_e((-0.05, -0.32, 0), (0.06, 0.06, 0.08), (-0.08, -0.36, 0), (0.30, 0.24, 0.36),
                 onset=10.5),),
    "lung": (_e((0.05, 0.02, 0.18), (0.03, 0.04, 0.04), (0.10, -0.02, 0.20), (0.16, 0.14, 0.14),
                onset=11.8, bilateral=True),),
    "gut": (_e((-0.35, -0.28, 0), (0.10, 0.06, 0.10), (-0.45, -0.42, 0), (0.24, 0.14, 0.28),
               onset=11.0),),
    "kidney": (_e((-0.38, 0.05, 0.24), (0.04, 0.04, 0.05), (-0.45, 0.0, 0.24), (0.12, 0.08, 0.10),
                  onset=12.5, bilateral=True),),
    "somite": (_e((-0.15, 0.22, 0.14), (0.55, 0.07, 0.07), (-0.20, 0.22, 0.16), (0.70, 0.10, 0.09),
                  ang0=-0.3, ang1=-0.1, bilateral=True),),
    "limb": (
        _e((0.12, -0.48, 0.42), (0.05, 0.04, 0.08), (0.15, -0.62, 0.50), (0.20, 0.16, 0.19),
           onset=10.0, bilateral=True),
        _e((-0.50, -0.45, 0.42), (0.05, 0.04, 0.08), (-0.58, -0.62, 0.50), (0.20, 0.16, 0.19),
           onset=10.8, bilateral=True),
    ),
    "cartilage": (
        _e((-0.15, 0.12, 0), (0.02, 0.02, 0.02), (-0.20, 0.12, 0), (0.62, 0.07, 0.07),
           ang0=-0.3, ang1=-0.1, onset=13.5),
        _e((0.15, -0.62, 0.50), (0.02, 0.02, 0.02), (0.15, -0.66, 0.50), (0.16, 0.05, 0.06),
           onset=13.5, bilateral=True),
    ),
    "facial_mesenchyme": (_e((0.86, 0.06, 0), (0.08, 0.08, 0.15), (0.96, 0.04, 0),
                             (0.20, 0.15, 0.22), onset=12.0),),
}
DOMAIN_NAMES: tuple[str, ...] = tuple(DOMAINS)
ANNOTATION_CATEGORIES: tuple[str, ...] = (*DOMAIN_NAMES, MESENCHYME)


def time_fraction(t: float) -> float:
    """0 at E9.5, 1 at E16.5, linear; clipped to [-0.5, 1.5] so extrapolation stays sane."""
    return float(np.clip((t - T_EARLY) / (T_LATE - T_EARLY), -0.5, 1.5))


def onset_weight(t: float, onset: float, width: float = 0.35) -> float:
    if onset <= 0:
        return 1.0
    return float(1.0 / (1.0 + np.exp(-(t - onset) / width)))


def _ellipsoid_dist2(e: Ellipsoid, u: np.ndarray, t: float, jitter: np.ndarray) -> np.ndarray:
    """Squared normalized distance of points ``u`` (n, 3) to ellipsoid ``e`` at time ``t``."""
    s = time_fraction(t)
    c = (1 - s) * np.asarray(e.c0) + s * np.asarray(e.c1) + jitter
    g = max(onset_weight(t, e.onset), 1e-3) ** 0.7
    a = ((1 - s) * np.asarray(e.a0) + s * np.asarray(e.a1)) * g
    ang = (1 - s) * e.ang0 + s * e.ang1
    ca, sa = np.cos(ang), np.sin(ang)
    zs = [c[2], -c[2]] if e.bilateral else [c[2]]
    out = None
    dx, dy = u[:, 0] - c[0], u[:, 1] - c[1]
    rx, ry = ca * dx + sa * dy, -sa * dx + ca * dy
    for zc in zs:
        d2 = (rx / a[0]) ** 2 + (ry / a[1]) ** 2 + ((u[:, 2] - zc) / a[2]) ** 2
        out = d2 if out is None else np.minimum(out, d2)
    return out


class Anatomy:
    """The seed-specific embryo: jittered part/domain positions and a smooth outline noise."""

    def __init__(self, seed: int, *, anatomy_jitter: float = 0.02, outline_noise: float = 0.06):
        rng = np.random.default_rng(np.random.SeedSequence([seed, 0, 1]))
        self.part_jitter = [rng.normal(0, anatomy_jitter, 3) * (1, 1, 0) for _ in BODY_PARTS]
        self.domain_jitter = {
            name: [rng.normal(0, anatomy_jitter, 3) * (1, 1, 0) for _ in ells]
            for name, ells in DOMAINS.items()
        }
        self.noise_k = rng.normal(0, 3.0, (6, 3))
        self.noise_phase = rng.uniform(0, 2 * np.pi, 6)
        self.outline_noise = outline_noise

    def body_field(self, u: np.ndarray, t: float) -> np.ndarray:
        """Inside-ness (n,): > 0 inside the embryo; roughly the depth below the surface."""
        phi = np.full(len(u), -np.inf)
        for e, jit in zip(BODY_PARTS, self.part_jitter):
            phi = np.maximum(phi, 1.0 - _ellipsoid_dist2(e, u, t, jit))
        noise = np.sin(u @ self.noise_k.T + self.noise_phase).mean(axis=1)
        return phi + self.outline_noise * noise

    def domain_membership(self, u: np.ndarray, t: float, softness: float = 0.12) -> np.ndarray:
        """Soft membership (n, n_domains) in [0, 1], already scaled by each domain's onset."""
        out = np.zeros((len(u), len(DOMAINS)), dtype=np.float64)
        for j, (name, ells) in enumerate(DOMAINS.items()):
            d2 = np.full(len(u), np.inf)
            amp = 0.0
            for e, jit in zip(ells, self.domain_jitter[name]):
                d2 = np.minimum(d2, _ellipsoid_dist2(e, u, t, jit))
                amp = max(amp, onset_weight(t, e.onset))
            x = np.clip((1.0 - np.sqrt(d2)) / softness, -30, 30)
            out[:, j] = amp / (1.0 + np.exp(-x))
        return out


@dataclass
class SliceGeometry:
    """One section: observed coordinates (microns), body coordinates, and its transform."""

    name: str
    timepoint: float
    spatial: np.ndarray  # (n, 2) microns, observed frame
    u: np.ndarray  # (n, 3) normalized body coordinates
    depth: np.ndarray  # (n,) body field value (> 0)
    plane: tuple[float, float, float]  # z0, tx, ty
    rotation_deg: float
    flip: bool
    bin_um: float


def embryo_length_um(t: float, length0: float, growth: float) -> float:
    return float(length0 * np.exp(growth * (t - T_EARLY)))


def _rng(seed: int, stream: int, t: float, k: int, *extra: int) -> np.random.Generator:
    tkey = int(round(t * 1000))
    return np.random.default_rng(np.random.SeedSequence([seed, stream, tkey, k, *extra]))


STREAM_GEOMETRY, STREAM_SCATTER, STREAM_LIBRARY, STREAM_COUNTS, STREAM_REDRAW = 1, 2, 3, 4, 5


def slice_rng(seed: int, stream: int, t: float, k: int, *extra: int) -> np.random.Generator:
    """Randomness of one slice, from (seed, stream, time, slice index) only."""
    return _rng(seed, stream, t, k, *extra)


def _section_points(anat: Anatomy, q: np.ndarray, t: float, plane, deform) -> tuple:
    u_xy = q + deform(q)
    z = plane[0] + plane[1] * u_xy[:, 0] + plane[2] * u_xy[:, 1]
    u = np.column_stack([u_xy, z])
    return u, anat.body_field(u, t)


def slice_geometry(anat: Anatomy, cfg, t: float, k: int) -> SliceGeometry:
    """Geometry of slice ``k`` at time ``t`` (deterministic in seed, t, k)."""
    rng = slice_rng(cfg.seed, STREAM_GEOMETRY, t, k)
    n_s = cfg.slices_per_timepoint
    if k < n_s:
        bases = np.linspace(-1.0, 1.0, n_s) * (n_s - 1) / n_s
        base = bases[np.argsort(np.abs(bases), kind="stable")][k]  # slice 0 nearest the midline
    else:
        base = rng.uniform(-1.0, 1.0)
    z0 = cfg.plane_spread * base + rng.normal(0, 0.03)
    plane = (float(z0), float(rng.normal(0, cfg.plane_tilt)), float(rng.normal(0, cfg.plane_tilt)))
    angle = float(rng.uniform(-1.0, 1.0) * np.deg2rad(cfg.max_rotation_deg))
    flip = bool(rng.random() < cfg.flip_prob)
    offset = rng.uniform(500.0, 3000.0, 2)
    dk = rng.normal(0, 2.5, (4, 2))
    dph = rng.uniform(0, 2 * np.pi, (4, 2))
    damp = cfg.deformation * rng.normal(0, 1, (4, 2)) / 2.0

    def deform(q):
        return np.stack([(damp[:, j] * np.sin(q @ dk.T + dph[:, j])).sum(axis=1) for j in (0, 1)],
                        axis=1)

    # Bin spacing from the section's area, so that the midline section at time t holds about
    # bins_per_slice * sqrt(L(t) / L(13)) bins and lateral sections fewer.
    g = np.linspace(-1.6, 1.6, 161)
    gq = np.stack(np.meshgrid(g, g, indexing="xy"), axis=-1).reshape(-1, 2)
    cell = (g[1] - g[0]) ** 2
    _, phi_m = _section_points(anat, gq, t, (0.0, 0.0, 0.0), lambda q: np.zeros_like(q))
    area_m = max((phi_m > 0).sum() * cell, 1e-3)
    length = embryo_length_um(t, cfg.embryo_length_um, cfg.growth_rate)
    l13 = embryo_length_um(13.0, cfg.embryo_length_um, cfg.growth_rate)
    n_mid = 1.15 * cfg.bins_per_slice * np.sqrt(length / l13)
    step = float(np.sqrt(area_m / n_mid))  # normalized units
    scale_um = length / 2.0
    half = 1.7
    n_side = int(np.ceil(2 * half / step))
    idx = (np.arange(n_side) - (n_side - 1) / 2) * step
    grid = np.stack(np.meshgrid(idx, idx, indexing="xy"), axis=-1).reshape(-1, 2)  # rotated frame
    ca, sa = np.cos(angle), np.sin(angle)
    rot = np.array([[ca, -sa], [sa, ca]])
    q = grid @ rot  # observed-frame grid -> body frame (rot^T applied to row vectors)
    if flip:
        q[:, 1] = -q[:, 1]
    u, phi = _section_points(anat, q, t, plane, deform)
    keep = phi > 0
    spatial = grid[keep] * scale_um + offset
    return SliceGeometry(
        name=f"E{t:g}_s{k + 1}", timepoint=float(t), spatial=spatial.astype(np.float64),
        u=u[keep], depth=phi[keep], plane=plane, rotation_deg=float(np.rad2deg(angle)), flip=flip,
        bin_um=step * scale_um,
    )
