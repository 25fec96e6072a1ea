"""Gene programs of the synthetic atlas: what each program looks like in space and time.

A gene ``g`` of program ``p`` has the expected rate (relative, before library size)

    rate[i, g] = scale[g] * T_p(t + shift[g]) * (leak[g] + S_p[i, t])

where ``S_p`` is the program's spatial pattern on the bins of a slice (tissue domain
membership, a gradient, scattered cells, ...), ``T_p`` its temporal profile in [0, 1] and
``leak`` a small ambient background over the whole section.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ._synth_anatomy import DOMAIN_NAMES

KINDS = ("domain", "temporal", "gradient", "scattered", "housekeeping", "silent")


@dataclass(frozen=True)
class Program:
    name: str
    kind: str
    spatial: tuple  # ("domains", ((name, weight), ...)) | ("body",) | ("mesenchyme", w_body)
    #                 | ("gradient", axis) | ("scatter", density, ((name, weight), ...) | None)
    #                 | ("none",)
    profile: tuple = ("flat",)  # ("rise", t, w) | ("decline", t, w) | ("pulse", t, w)
    markers: tuple[str, ...] = field(default_factory=tuple)


DOMAIN_PROGRAMS: tuple[Program, ...] = (
    Program("brain", "domain", ("domains", (("brain", 1.0),)), markers=("Otx2", "Foxg1")),
    Program("neural", "domain", ("domains", (("brain", 1.0), ("neural_tube", 1.0))),
            markers=("Sox2", "Nes")),
    Program("eye", "domain", ("domains", (("eye", 1.0), ("brain", 0.25))), markers=("Pax6",)),
    Program("heart", "domain", ("domains", (("heart", 1.0),)), markers=("Myh6", "Ttn", "Nppa")),
    Program("liver", "domain", ("domains", (("liver", 1.0),)), markers=("Afp", "Alb")),
    Program("lung", "domain", ("domains", (("lung", 1.0),)), markers=("Nkx2-1", "Sftpc")),
    Program("gut", "domain", ("domains", (("gut", 1.0),)), markers=("Cdx2", "Vil1")),
    Program("kidney", "domain", ("domains", (("kidney", 1.0),)), markers=("Pax2", "Wt1")),
    Program("somite", "domain", ("domains", (("somite", 1.0),)), markers=("Pax3", "Myf5")),
    Program("limb", "domain", ("domains", (("limb", 1.0),)), markers=("Prrx1", "Hoxd13")),
    Program("cartilage", "domain", ("domains", (("cartilage", 1.0),)), markers=("Col2a1", "Sox9")),
    Program("facial", "domain", ("domains", (("facial_mesenchyme", 1.0),)), markers=("Dlx5",)),
)

TEMPORAL_PROGRAMS: tuple[Program, ...] = (
    Program("mesenchyme_rise", "temporal", ("mesenchyme", 0.3), ("rise", 12.0, 0.9),
            markers=("Col3a1", "Col1a1")),
    Program("embryonic_blood", "temporal", ("scatter", 0.5, (("heart", 6.0), ("liver", 1.0))),
            ("decline", 11.0, 0.4), markers=("Hba-x", "Hbb-y")),
    Program("early_decline", "temporal", ("body",), ("decline", 12.0, 0.9), markers=("Lin28a",)),
    Program("late_rise", "temporal", ("body",), ("rise", 14.5, 0.7), markers=("H19",)),
    Program("neural_pulse", "temporal", ("domains", (("brain", 1.0), ("neural_tube", 1.0))),
            ("pulse", 13.0, 1.2), markers=("Neurod1",)),
    Program("mid_pulse", "temporal", ("body",), ("pulse", 11.5, 0.9), markers=("Igf2bp1",)),
)

GRADIENT_PROGRAMS: tuple[Program, ...] = (
    Program("posterior", "gradient", ("gradient", "ap"), markers=("Hoxc10", "Hoxa10")),
    Program("dorsal", "gradient", ("gradient", "dv"), markers=("Msx1",)),
    Program("surface", "gradient", ("gradient", "surface"), markers=("Krt14", "Krt5")),
    Program("left", "gradient", ("gradient", "lr"), markers=("Pitx2",)),
)

SCATTERED_PROGRAMS: tuple[Program, ...] = (
    Program("endothelial", "scattered", ("scatter", 0.12, None), markers=("Cdh5", "Pecam1")),
    Program("immune", "scattered", ("scatter", 0.05, None), ("rise", 12.0, 0.8),
            markers=("Ptprc",)),
    Program("definitive_blood", "scattered", ("scatter", 0.3, (("liver", 3.0), ("heart", 2.0))),
            ("rise", 12.5, 0.6), markers=("Hbb-bs",)),
    Program("neurons", "scattered", ("scatter", 0.35, (("brain", 1.0), ("neural_tube", 1.0))),
            ("rise", 11.0, 0.8), markers=("Stmn2",)),
)

HOUSEKEEPING = Program("housekeeping", "housekeeping", ("body",),
                       markers=("Actb", "Gapdh", "Rplp0"))
SILENT = Program("silent", "silent", ("none",))


def build_programs(cfg) -> list[Program]:
    """The program table for a config: fixed programs first, extra random ones if asked."""
    rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, 0, 2]))

    def extend(base: tuple[Program, ...], n: int, make) -> list[Program]:
        out = list(base[:n])
        for j in range(len(out), n):
            out.append(make(j))
        return out

    def extra_temporal(j):
        kind = ("rise", "decline", "pulse")[j % 3]
        dom = DOMAIN_NAMES[int(rng.integers(len(DOMAIN_NAMES)))]
        spatial = ("body",) if j % 2 else ("domains", ((dom, 1.0),))
        return Program(f"temporal_{j}", "temporal", spatial,
                       (kind, float(rng.uniform(10.0, 15.5)), float(rng.uniform(0.5, 1.5))))

    def extra_gradient(j):
        return Program(f"gradient_{j}", "gradient", ("gradient", ("ap", "dv", "surface", "lr",
                                                                  "anterior", "ventral")[j % 6]))

    def extra_scattered(j):
        dom = DOMAIN_NAMES[int(rng.integers(len(DOMAIN_NAMES)))]
        return Program(f"scattered_{j}", "scattered",
                       ("scatter", float(rng.uniform(0.03, 0.3)), ((dom, 1.0),) if j % 2 else None))

    progs = list(DOMAIN_PROGRAMS)
    progs += extend(TEMPORAL_PROGRAMS, cfg.n_temporal_programs, extra_temporal)
    progs += extend(GRADIENT_PROGRAMS, cfg.n_gradient_programs, extra_gradient)
    progs += extend(SCATTERED_PROGRAMS, cfg.n_scattered_programs, extra_scattered)
    progs += [HOUSEKEEPING, SILENT]
    return progs


def profile_value(profile: tuple, t: np.ndarray | float) -> np.ndarray:
    """Temporal profile in [0, 1] (vectorized over ``t``)."""
    t = np.asarray(t, dtype=np.float64)
    kind = profile[0]
    if kind == "flat":
        return np.ones_like(t)
    t0, w = profile[1], profile[2]
    if kind == "rise":
        return 1.0 / (1.0 + np.exp(-(t - t0) / w))
    if kind == "decline":
        return 1.0 / (1.0 + np.exp((t - t0) / w))
    if kind == "pulse":
        return np.exp(-0.5 * ((t - t0) / w) ** 2)
    raise ValueError(f"unknown temporal profile {kind!r}")


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-np.clip(x, -40, 40)))


def _weighted(membership: np.ndarray, weights) -> np.ndarray:
    out = np.zeros(len(membership))
    for name, w in weights:
        out += w * membership[:, DOMAIN_NAMES.index(name)]
    return out


def spatial_patterns(programs: list[Program], u: np.ndarray, depth: np.ndarray,
                     membership: np.ndarray, scatter_rng) -> np.ndarray:
    """Spatial pattern (n_bins, n_programs) float64 >= 0 of every program on one slice.

    ``scatter_rng(j)`` returns the generator for the scattered cells of program ``j``.
    """
    n = len(u)
    out = np.zeros((n, len(programs)))
    for j, p in enumerate(programs):
        s = p.spatial
        if s[0] == "domains":
            v = np.clip(_weighted(membership, s[1]), 0, None)
        elif s[0] == "body":
            v = np.ones(n)
        elif s[0] == "mesenchyme":
            v = s[1] + (1 - s[1]) * (1.0 - membership.max(axis=1, initial=0.0))
        elif s[0] == "gradient":
            axis = s[1]
            v = {
                "ap": lambda: _sigmoid((-u[:, 0] - 0.1) / 0.2),
                "anterior": lambda: _sigmoid((u[:, 0] - 0.3) / 0.2),
                "dv": lambda: _sigmoid((u[:, 1] - 0.05) / 0.15),
                "ventral": lambda: _sigmoid((-u[:, 1] - 0.2) / 0.15),
                "surface": lambda: np.exp(-np.clip(depth, 0, None) / 0.06),
                "lr": lambda: _sigmoid(u[:, 2] / 0.12),
            }[axis]()
        elif s[0] == "scatter":
            density = s[1] * (np.ones(n) if s[2] is None else _weighted(membership, s[2]))
            v = scatter_rng(j).poisson(np.clip(density, 0, None)).astype(np.float64)
        elif s[0] == "none":
            v = np.zeros(n)
        else:  # pragma: no cover - table is fixed above
            raise ValueError(f"unknown spatial pattern {s[0]!r}")
        out[:, j] = v
    return out
