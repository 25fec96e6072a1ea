"""How much of a held-out day do the observed days pin down? Classical smoothers vs the truth.

On a prepared synthetic dataset with a held-out time point, every `spatial` gene's held-out
frame is estimated from the observed days alone by a temporal Gaussian kernel (bandwidth in
days) over the days' images, then a spatial Gaussian blur inside the tissue (normalized
convolution, sigma in pixels), and scored against the noise-free truth (median Pearson over the
genes). The days' images are the baselines' day means (`timepoint_image`, every slice of a day)
or the reference slice of each day (what `context="observed"` gives the model). The held-out
day's own real slice, blurred, is scored too: how far one noisy observation of the day is from
its truth. So is the same smoothing of the observed days' *noise-free truth* (their reference
slices): what an estimate that had removed every count of noise from the observed days (by
pooling genes of one program, say) and then interpolated would score, a ceiling for any
estimate built by smoothing the observed days. With `--metrics` (an evaluation's
metrics.json) the model's one-step in-filled posterior mean is printed beside them, and the
posterior-mean Pearson a calibrated sampler would need for its mean of samples to reach
`--target` (videogene.tl.calibration).

    python benchmarks/bench_smoothers.py runs/steps4800/dataset_32_holdout12.5 \
        --metrics runs/steps4800/evaluate/metrics.json [--no-append]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _common import report  # noqa: E402

from videogene.data import load_masks, load_metadata, read_gene_canvases  # noqa: E402
from videogene.data.holdout import (  # noqa: E402
    holdout_spec,
    reference_slice,
    slices_by_timepoint,
    timepoint_image,
    tkey,
)
from videogene.errors import InputError  # noqa: E402
from videogene.tl.baselines import synthetic_truth  # noqa: E402
from videogene.tl.calibration import required_posterior_pearson  # noqa: E402
from videogene.tl.heldout import collect_reference_frames, gene_sets, heldout_frames  # noqa: E402
from videogene.tl.metrics import pearson  # noqa: E402

CLEAN = "observed days' truth (no count noise)"


def blur(img: np.ndarray, cover: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of ``img`` inside ``cover`` (normalized convolution); 0 outside."""
    if sigma == 0:
        return np.where(cover, img, 0.0)
    num = gaussian_filter(np.where(cover, img, 0.0), sigma)
    den = gaussian_filter(cover.astype(np.float64), sigma)
    return np.where(den > 1e-6, num / np.maximum(den, 1e-6), 0.0)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dataset", help="prepared synthetic dataset with a held-out time point")
    p.add_argument("--bandwidths", default="0.5,1,2,100", help="temporal kernels (days)")
    p.add_argument("--sigmas", default="0,0.7,1,1.5", help="spatial blurs (pixels)")
    p.add_argument("--gene-set", default="spatial", help="gene set scored (spatial)")
    p.add_argument("--metrics", default=None, help="an evaluation's metrics.json to set beside")
    p.add_argument("--target", type=float, default=0.772, help="sample target (0.772)")
    p.add_argument("--no-append", action="store_true", help="print only")
    a = p.parse_args(argv)
    ds = Path(a.dataset)
    try:
        meta = load_metadata(ds)
        masks = np.asarray(load_masks(ds), dtype=bool)
        spec = holdout_spec(meta)
        frames = heldout_frames(meta, spec=spec, name=f"dataset {ds}")
        sets = gene_sets(meta, [g for g, _ in frames], dataset_dir=ds, masks=masks, spec=spec,
                         progress=False)
        if a.gene_set not in sets:
            raise InputError(f"--gene-set {a.gene_set!r}: expected one of {', '.join(sets)}")
        members = set(sets[a.gene_set])
        frames = [f for f in frames if f[0] in members]
        fs = collect_reference_frames(ds, meta, masks, frames, spec, progress=False)
        if "truth" not in fs.methods:
            raise InputError(f"dataset {ds}: no synthetic truth (videogene_meta.json has no "
                             "synthetic config), nothing to score against")
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    hs = [float(x) for x in a.bandwidths.split(",")]
    sigmas = [float(x) for x in a.sigmas.split(",")]
    byt = slices_by_timepoint(meta)
    held = {tkey(t) for t in spec["timepoints"]}
    observed = sorted(t for t in byt if t not in held)
    index = {g: k for k, (g, _) in enumerate(fs.frames)}
    clean = {t: synthetic_truth(meta, t, byt[t][0], list(index)) for t in observed}
    scores: dict[tuple, list[float]] = {}
    for g, canv in read_gene_canvases(ds, genes=list(index)):
        k = index[g]
        th, m, truth = fs.frames[k][1], fs.masks[k], fs.methods["truth"][k]
        days = {"day means": {t: timepoint_image(canv, masks, byt[t]) for t in observed},
                "reference slices": {t: (canv[byt[t][0]], masks[byt[t][0]]) for t in observed},
                CLEAN: {t: (clean[t][g], masks[byt[t][0]]) for t in observed}}
        for source, imgs in days.items():
            for h in hs:
                w = np.array([np.exp(-0.5 * ((t - th) / h) ** 2) for t in observed])
                w /= w.sum()
                for s in sigmas:
                    est = sum(wi * blur(*imgs[t], s) for wi, t in zip(w, observed))
                    scores.setdefault((source, h, s), []).append(pearson(est, truth, m))
        ref = reference_slice(meta, th)
        for s in sigmas:
            scores.setdefault(("held-out real slice", None, s), []).append(
                pearson(blur(canv[ref], masks[ref], s), truth, m))
    med = {key: float(np.nanmedian(v)) for key, v in scores.items()}
    rows = []
    for src, h in dict.fromkeys((src, h) for src, h, _ in med):
        row = {"days' images": src, "kernel (days)": "-" if h is None else f"{h:g}"}
        row.update({f"blur {s:g} px": med[(src, h, s)] for s in sigmas})
        rows.append(row)
    src, kern, sig = max((k for k in med if k[0] not in ("held-out real slice", CLEAN)),
                         key=med.get)
    top = med[(src, kern, sig)]
    ceiling = max(v for k, v in med.items() if k[0] == CLEAN)
    notes = (f"{len(fs.frames)} `{a.gene_set}` genes of {ds}, held out "
             f"{', '.join(f'{t:g}' for t in spec['timepoints'])}; observed days "
             f"{', '.join(f'{t:g}' for t in observed)}. Best smoother of the observed days: "
             f"{src}, kernel {kern:g} d, blur {sig:g} px: {top:.3f} (chosen on the truth, so "
             f"optimistic). The same smoothing of the observed days' noise-free truth: "
             f"{ceiling:.3f} at best.")
    if a.metrics:
        summ = json.loads(Path(a.metrics).read_text())["summary"]
        cal = ((summ.get("calibration") or {}).get("passes") or {}).get("model_infill") or {}
        if cal.get("posterior_mean_pearson") is not None:
            need = required_posterior_pearson(a.target, cal["draw_pearson"], cal["n_samples"])
            notes += (f" The model's in-filled one-step posterior mean ({a.metrics}): "
                      f"{cal['posterior_mean_pearson']:.3f}; a calibrated sampler's mean of "
                      f"{cal['n_samples']} samples reaches {a.target:g} only from a posterior "
                      f"mean of {need:.3f} (one count draw of the truth: "
                      f"{cal['draw_pearson']:.3f}).")
    report("Held-out day from the observed days: classical smoothers vs the truth (median "
           "Pearson)", rows,
           notes=notes, append=not a.no_append)
    return 0


if __name__ == "__main__":
    sys.exit(main())
