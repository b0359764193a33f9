"""Compare each image's worst-case perturbation with many random ones of the same norm (Antun et al. 2020).

Are the artefacts of the worst case rare events?

The paper's conclusion (5) asks whether the artefacts that worst-case perturbations cause
are rare events.  This job measures it for one reconstruction map: for each of ``N``
images it finds the worst-case perturbation ``r`` in the ball ``||r|| <= radius * ||x||``
(:func:`mrijax.attacks.worst_case`, projected ascent, all images in one batched call),
then pushes ``K`` random Gaussian perturbations of exactly the same norm through the
same map (:func:`mrijax.attacks.noise_baseline`, batched, ``--draw_chunk`` draws per
compiled call), and asks how many random draws come anywhere near the worst case.

For each image and each threshold ``t`` in ``--thresholds`` it reports the fraction of
draws that do at least ``t`` times the worst case's harm -- a PSNR change (perturbed -
clean, negative = worse) at most ``t`` times the worst case's, and the same for the output
change ``||f(A x + A r) - f(A x)||`` (at least ``t`` times) --, the strongest draw and the
mean over the draws, and the fraction of draws that beat the worst case outright (a sign
that the search was too short).

Note on the comparison: both perturbations live in the image domain with the same
``||r||``; the search puts its energy where ``A`` sees it, while a random image keeps only
about ``sqrt(rate)`` of its norm in ``||A r||`` (both are reported).  ``--domain=measurement``
compares perturbations of the measurements of one norm instead.

Writes into ``--out_dir``:

* ``noise_vs_worst_case.png``: histograms of the PSNR changes (random draws per image,
  the worst case of each image as a vertical line) and of the random draws' output change
  as a fraction of the worst case's; an example row (image ``--example_image``): the
  clean reconstruction, the worst case and one random draw of the same norm, with the
  changes they cause on one colour scale.
* ``results.json``: per image and pooled: the numbers above, the model and all flags.
* ``arrays.npz``: images, mask, worst-case perturbations and reconstructions, and every
  random draw's PSNR change, output change and ``||A r||``.

The finished search is saved as ``worst_case.npz`` and each chunk of draws as
``noise_chunk{c}.npz``; ``--resume`` continues an interrupted run from there.

Example (the shipped checkpoint on four 64 x 64 MNI axial slices, 256 draws each)::

    python -m experiments.noise_vs_worst_case --out_dir=runs/noise_vs_worst_case
"""

from __future__ import annotations

import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags

from experiments import common
from mrijax import attacks, fourier

def define_flags() -> flags.FlagValues:
    fv = flags.FlagValues()
    d = dict(flag_values=fv)
    common.define_model_flags(fv, cs_iters_lower_bound=1)
    common.define_image_flags(fv, images="mni:axial", num_images=4, size=64)
    common.define_out_flags(fv)
    # sample_n=4 at size 64 is the fraction the shipped checkpoint was trained with.
    common.define_mask_flags(fv, sample_n=4)
    common.define_search_flags(fv, steps=100)
    flags.DEFINE_enum("domain", "image", ["image", "measurement"],
                      "Where r lives (both the search and the random draws).", **d)
    flags.DEFINE_bool("real", False, "Real-valued perturbations only (image domain; both).", **d)
    flags.DEFINE_integer("noise_draws", 256, "Random perturbations per image (K).", lower_bound=1, **d)
    flags.DEFINE_integer("draw_chunk", 64, "Random draws per image per compiled call (memory).",
                         lower_bound=1, **d)
    flags.DEFINE_list("thresholds", ["0.5", "0.9"], "Report the fraction of draws reaching these "
                      "fractions of the worst case's PSNR change / output change.", **d)
    flags.DEFINE_integer("seed", 0, "Seed of the search's starts, the random draws and --images=ellipses.",
                         lower_bound=0, **d)
    flags.DEFINE_integer("chunk", 25, "Search iterations per compiled call between progress lines.",
                         lower_bound=1, **d)
    flags.DEFINE_integer("example_image", 0, "Image of the example row of the figure.", lower_bound=0, **d)
    return fv


# Flags that do not change the numbers: a resumed run may differ in them.
_NOT_NUMERIC = {"resume", "chunk", "out_dir", "example_image"}

# Stream ids folded into the seed, so that the search and every chunk of draws get their own keys.
_SEARCH_STREAM, _NOISE_STREAM, _EXAMPLE_STREAM = 0, 1000, 999


def _thresholds(fv):
    try:
        ts = sorted({float(t) for t in fv.thresholds})
    except ValueError as e:
        raise ValueError(f"--thresholds must be numbers, got {fv.thresholds}") from e
    if not ts or any(not 0 < t <= 1 for t in ts):
        raise ValueError(f"--thresholds must be fractions in (0, 1], got {fv.thresholds}")
    return ts


def near_fraction(noise, worst, threshold):
    """Fraction of random draws that reach ``threshold`` times the worst case, per image.

    Values measure harm, larger = worse: the PSNR loss ``-psnr_change`` or the output change.
    ``noise``: ``(N, K)`` values of the draws;
    ``worst``: ``(N,)`` the worst case's value.  A draw counts when
    ``noise >= threshold * worst``.  Where the worst case did no harm (``worst <= 0``)
    the question has no meaning and the fraction is NaN.
    """
    noise, worst = np.asarray(noise, np.float64), np.asarray(worst, np.float64)
    hit = np.mean(noise >= threshold * worst[:, None], axis=1)
    return np.where(worst > 0, hit, np.nan)


def _search(fv, recon, images, mask):
    report = common.search_progress("worst case", fv.steps)
    res = attacks.worst_case(recon, images, mask, key=jax.random.fold_in(jax.random.key(fv.seed), _SEARCH_STREAM),
                             steps=fv.steps, radius=fv.radius, radius_relative_to=fv.radius_relative_to,
                             lr=fv.lr, momentum=fv.momentum, tau=fv.tau, domain=fv.domain, real=fv.real,
                             chunk=fv.chunk, callback=report)
    # The worst case and, for the figure only, one fresh random draw of the same norm per image,
    # evaluated in one call (one compile).
    r_norm = np.linalg.norm(np.asarray(res.r).reshape(len(images), -1), axis=1)
    r_example = _example_draws(fv, images, mask, r_norm)
    ev = attacks.evaluate(recon, images, mask, np.stack([np.asarray(res.r), r_example]), domain=fv.domain)
    ev = {k: np.asarray(v) for k, v in ev.items()}
    out = {"r": np.asarray(res.r), "clean": ev["clean"][0], "radius": np.asarray(res.radius),
           "diverged": np.asarray(res.diverged), "history_diff_norm": np.asarray(res.history["diff_norm"]).T,
           "example_r": r_example, "example_perturbed": ev["perturbed"][1],
           "example_psnr_change": common.psnr_change(ev)[1], "example_diff_norm": ev["diff_norm"][1],
           "psnr_change": common.psnr_change(ev)[0]}
    out.update({k: ev[k][0] for k in ("perturbed", "r_norm", "Ar_norm", "diff_norm", "psnr_clean",
                                      "psnr_perturbed")})
    return out


def _noise(fv, recon, images, mask, norms):
    """All random draws, ``--draw_chunk`` per image at a time, each chunk with its own key and saved.

    Every chunk draws ``--draw_chunk`` perturbations (the last one's surplus is dropped), so
    all chunks have one shape; with the images, mask and norms fixed, the baseline is
    compiled once as a function of the key alone.
    """
    n_chunks = -(-fv.noise_draws // fv.draw_chunk)
    baseline = jax.jit(lambda key: attacks.noise_baseline(recon, images, mask, norms[:, None], fv.draw_chunk, key,
                                                          domain=fv.domain, real=fv.real))
    parts = []
    for c in range(n_chunks):
        path = os.path.join(fv.out_dir, f"noise_chunk{c}.npz")
        common.note_progress(path, f"after noise chunk {c + 1}/{n_chunks} (saved)")
        if fv.resume and os.path.exists(path):
            print(f"[noise chunk {c + 1}/{n_chunks}] already finished, loading it", flush=True)
            parts.append(common.load_npz(path))
            continue
        t0 = time.time()
        nb = baseline(jax.random.fold_in(jax.random.key(fv.seed), _NOISE_STREAM + c))
        part = {name: np.asarray(nb[name])[:, 0] for name in ("diff_norm", "r_norm", "Ar_norm")}
        part["psnr_change"] = common.psnr_change(nb)[:, 0]
        common.save_npz(path, **part)
        parts.append(part)
        print(f"[noise chunk {c + 1}/{n_chunks}] {fv.draw_chunk} draws x {images.shape[0]} image(s), PSNR change "
              f"of the strongest draw {part['psnr_change'].min():+.3f} dB  {time.time() - t0:.1f}s", flush=True)
    # Chunks of draws (not of images): joined along the draw axis.
    return {name: np.concatenate([p[name] for p in parts], axis=1)[:, :fv.noise_draws] for name in parts[0]}


def _example_draws(fv, images, mask, norms):
    """One fresh random perturbation per image of norm ``norms[i]``, drawn like noise_baseline's.

    Only for the figure's example row (it is not one of the counted draws).
    """
    k1, k2 = jax.random.split(jax.random.fold_in(jax.random.key(fv.seed), _EXAMPLE_STREAM))
    g = jax.random.normal(k1, images.shape).astype(jnp.complex64)
    if not fv.real:
        g = g + 1j * jax.random.normal(k2, images.shape)
    if fv.domain == "measurement":
        g = fourier.apply_mask(g, mask)
    g = g / jnp.sqrt(jnp.sum(jnp.abs(g) ** 2, axis=(-2, -1), keepdims=True))
    return np.asarray(g * jnp.asarray(norms, jnp.float32)[:, None, None])


def _summary(wc, nz, thresholds):
    """Per image and pooled numbers.  PSNR changes are perturbed - clean (negative = worse): the
    strongest draw is the one with the *lowest* change; fractions compare harm, -psnr_change."""
    n = wc["psnr_change"].shape[0]
    wch, nch = wc["psnr_change"], nz["psnr_change"]
    per_image = []
    for i in range(n):
        e = {"index": i, "r_norm": wc["r_norm"][i], "radius": wc["radius"][i], "Ar_norm": wc["Ar_norm"][i],
             "psnr_clean": wc["psnr_clean"][i], "worst_psnr_change": wch[i],
             "worst_diff_norm": wc["diff_norm"][i], "worst_gain": wc["diff_norm"][i] / wc["Ar_norm"][i],
             "diverged": wc["diverged"][i],
             "noise_r_norm_mean": nz["r_norm"][i].mean(), "noise_Ar_norm_mean": nz["Ar_norm"][i].mean(),
             "noise_psnr_change_mean": nch[i].mean(), "noise_psnr_change_min": nch[i].min(),
             "noise_psnr_change_std": nch[i].std(),
             "noise_diff_norm_mean": nz["diff_norm"][i].mean(), "noise_diff_norm_max": nz["diff_norm"][i].max(),
             "strongest_noise_over_worst_psnr_change": nch[i].min() / wch[i],
             "max_noise_over_worst_diff_norm": nz["diff_norm"][i].max() / wc["diff_norm"][i],
             "fraction_beating_worst_psnr_change": float(np.mean(nch[i] < wch[i])),
             "fraction_beating_worst_diff_norm": float(np.mean(nz["diff_norm"][i] > wc["diff_norm"][i]))}
        per_image.append(e)
    near = {}
    for t in thresholds:
        fp = near_fraction(-nch, -wch, t)
        fd = near_fraction(nz["diff_norm"], wc["diff_norm"], t)
        for i in range(n):
            per_image[i][f"fraction_within_{t:g}_psnr_change"] = fp[i]
            per_image[i][f"fraction_within_{t:g}_diff_norm"] = fd[i]
        near[f"{t:g}"] = {"psnr_change": float(np.nanmean(fp)) if np.any(np.isfinite(fp)) else float("nan"),
                          "diff_norm": float(np.nanmean(fd)) if np.any(np.isfinite(fd)) else float("nan")}
    pooled = {"draws_per_image": int(nch.shape[1]),
              "mean_worst_psnr_change": float(wch.mean()),
              "mean_noise_psnr_change": float(nch.mean()),
              "min_noise_psnr_change": float(nch.min()),
              "mean_worst_diff_norm": float(wc["diff_norm"].mean()),
              "mean_noise_diff_norm": float(nz["diff_norm"].mean()),
              "strongest_noise_over_worst_psnr_change": float(np.max(nch.min(1) / wch)),
              "max_noise_over_worst_diff_norm": float(np.max(nz["diff_norm"].max(1) / wc["diff_norm"])),
              "fraction_beating_worst_psnr_change": float(np.mean(nch < wch[:, None])),
              "fraction_beating_worst_diff_norm": float(np.mean(nz["diff_norm"] > wc["diff_norm"][:, None])),
              "mean_fraction_within": near}
    return per_image, pooled


def _figure(fv, arrays, thresholds):
    plt = common.pyplot()
    n = arrays["x"].shape[0]
    fig = plt.figure(figsize=(15, 6.6))
    outer = fig.add_gridspec(2, 1, height_ratios=[1.15, 1], hspace=0.35)
    top = outer[0].subgridspec(1, 2, wspace=0.2)
    ax_h, ax_d = fig.add_subplot(top[0, 0]), fig.add_subplot(top[0, 1])

    changes, worst = arrays["noise_psnr_change"], arrays["worst_psnr_change"]
    lo = min(float(changes.min()), float(worst.min()))
    hi = max(float(changes.max()), 0.0)
    bins = np.linspace(lo - 1e-6 - 0.02 * (hi - lo), hi, 80)
    for i in range(n):
        color = f"C{i % 10}"
        ax_h.hist(changes[i], bins=bins, color=color, alpha=0.5, label=f"image {i}: {changes.shape[1]} random")
        ax_h.axvline(worst[i], color=color, ls="--", lw=1.5)
    ax_h.set_xlabel("PSNR change (dB), perturbed - clean: < 0 worse   (dashed: each image's worst case)")
    ax_h.set_ylabel("random draws")
    ax_h.set_title(f"PSNR change: random r vs worst case, ||r|| equal ({arrays['r_rel'].mean():.3g} ||x||)",
                   fontsize=9)
    ax_h.legend(fontsize=7)

    ratio = arrays["noise_diff_norm"] / arrays["worst_diff_norm"][:, None]
    ax_d.hist(ratio.reshape(-1), bins=np.linspace(0, max(1.05, float(ratio.max()) * 1.05), 80), color="0.4")
    for t in thresholds:
        ax_d.axvline(t, color="C3", ls=":", lw=1.2)
        ax_d.text(t, ax_d.get_ylim()[1] * 0.92, f" {t:g}", color="C3", fontsize=8)
    ax_d.axvline(1.0, color="C3", lw=1.5, label="worst case")
    ax_d.set_xlabel("||f(A x + A r) - f(A x)||, random r / worst case (all images)")
    ax_d.set_title("Output change of the random draws as a fraction of the worst case's", fontsize=9)
    ax_d.legend(fontsize=7)

    i = fv.example_image
    x = np.abs(arrays["x"][i])
    vmax = float(x.max()) or 1.0
    clean = arrays["clean"][i]
    d_wc = np.abs(arrays["worst_perturbed"][i] - clean)
    d_nz = np.abs(arrays["example_random_perturbed"][i] - clean)
    dmax = float(max(d_wc.max(), d_nz.max())) or 1.0
    panels = [(x, f"image {i}", vmax), (np.abs(clean), f"f(A x)  PSNR {arrays['psnr_clean'][i]:.2f} dB", vmax),
              (np.abs(arrays["worst_perturbed"][i]),
               f"worst case f(A(x + r))\nPSNR change {worst[i]:+.2f} dB", vmax),
              (d_wc, f"|change|, worst case\n||.|| = {arrays['worst_diff_norm'][i]:.3g}", dmax),
              (np.abs(arrays["example_random_perturbed"][i]),
               f"random r, same norm\nPSNR change {arrays['example_random_psnr_change'][i]:+.2f} dB", vmax),
              (d_nz, f"|change|, random r\n||.|| = {arrays['example_random_diff_norm'][i]:.3g}", dmax)]
    bottom = outer[1].subgridspec(1, len(panels), wspace=0.05)
    for c, (img, title, top_value) in enumerate(panels):
        ax = fig.add_subplot(bottom[0, c])
        ax.imshow(img, cmap="gray" if c in (0, 1, 2, 4) else "magma", vmin=0, vmax=top_value)
        ax.set_title(title, fontsize=8)
        ax.set_axis_off()
    fig.suptitle("Rare events? Worst-case perturbations against random perturbations of the same norm",
                 fontsize=10)
    common.save_figure(os.path.join(fv.out_dir, "noise_vs_worst_case.png"), fig)


def run(fv) -> dict:
    """The whole job for parsed flags ``fv``; returns the results dict written to results.json."""
    # Everything that can be wrong with the flags fails here, before any long computation.
    size = fv.size
    thresholds = _thresholds(fv)
    if not fv.radius > 0:
        raise ValueError(f"--radius must be > 0, got {fv.radius}")
    if fv.real and fv.domain == "measurement":
        raise ValueError("--real is for image-domain perturbations; drop it or use --domain=image")
    mask = common.mask_from_flags(fv)
    images = common.load_checked_images(fv.images, size, count=fv.num_images, seed=fv.seed)
    if fv.example_image >= images.shape[0]:
        raise ValueError(f"--example_image={fv.example_image} but --images gave {images.shape[0]} image(s)")
    recon, model_info = common.load_reconstruction(fv.model, mask, weights=fv.weights,
                                                   flip_filters=fv.flip_filters, cs_iters=fv.cs_iters,
                                                   cs_options=common.cs_options(fv), mask_kind=fv.mask)

    common.prepare_out_dir(fv, _NOT_NUMERIC)

    t0 = time.time()
    wc_path = os.path.join(fv.out_dir, "worst_case.npz")
    common.note_progress(wc_path, "after the worst-case search (saved)")
    if fv.resume and os.path.exists(wc_path):
        print("[worst case] already finished, loading it", flush=True)
        wc = common.load_npz(wc_path)
    else:
        wc = _search(fv, recon, images, mask)
        common.save_npz(wc_path, **wc)
    nz = _noise(fv, recon, images, mask, wc["r_norm"])

    per_image, pooled = _summary(wc, nz, thresholds)
    x_norm = np.linalg.norm(images.reshape(images.shape[0], -1), axis=1)
    arrays = {"x": images, "mask": mask, "worst_r": wc["r"], "clean": wc["clean"],
              "worst_perturbed": wc["perturbed"], "worst_psnr_change": wc["psnr_change"],
              "worst_diff_norm": wc["diff_norm"], "worst_r_norm": wc["r_norm"], "worst_Ar_norm": wc["Ar_norm"],
              "psnr_clean": wc["psnr_clean"], "r_rel": wc["r_norm"] / x_norm,
              "history_diff_norm": wc["history_diff_norm"],
              **{f"noise_{k}": v for k, v in nz.items()}}
    arrays.update({f"example_random_{k}": wc[f"example_{k}"] for k in ("r", "perturbed", "psnr_change", "diff_norm")})

    results = {"model": model_info, "flags": common.flag_dict(fv), "sampling_rate": float(mask.mean()),
               "thresholds": thresholds, "images": per_image, "summary": pooled, "seconds": time.time() - t0,
               "definitions": {
                   "psnr_change": common.PSNR_CHANGE_DEFINITION,
                   "diff_norm": "||f(A x + A r) - f(A x)||",
                   "fraction_within_t": "fraction of the random draws that do at least t times the worst "
                                        "case's harm: psnr_change <= t * the worst case's psnr_change, "
                                        "diff_norm >= t * its diff_norm (null where the worst case did no "
                                        "harm: psnr_change >= 0)",
                   "strongest": "the draw with the lowest psnr_change (most negative: the worst), or the "
                                "largest diff_norm",
                   "random draws": "Gaussian (complex unless --real) perturbations scaled to the worst case's "
                                   "||r|| (mrijax.attacks.noise_baseline)"}}
    common.save_npz(os.path.join(fv.out_dir, "arrays.npz"), **arrays)
    common.save_json(os.path.join(fv.out_dir, "results.json"), results)
    _figure(fv, arrays, thresholds)
    s = pooled
    near = ", ".join(f"{100 * v['psnr_change']:.1f}% / {100 * v['diff_norm']:.1f}% within {t}"
                     for t, v in s["mean_fraction_within"].items())
    print(f"done: {images.shape[0]} image(s) x {s['draws_per_image']} random draws.  Worst-case PSNR change "
          f"{s['mean_worst_psnr_change']:+.3f} dB (mean; negative = worse); random: mean "
          f"{s['mean_noise_psnr_change']:+.3f}, strongest {s['min_noise_psnr_change']:+.3f} dB.  Output change: "
          f"worst {s['mean_worst_diff_norm']:.4g}, random mean {s['mean_noise_diff_norm']:.4g}.  Draws near the "
          f"worst case (PSNR change / output change): {near}.  Files in {fv.out_dir}", flush=True)
    return results


def main(argv=None) -> int:
    return common.main(define_flags, run, argv)


if __name__ == "__main__":
    sys.exit(main())
