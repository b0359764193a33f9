"""Reconstruct at several sampling rates (nested masks); plot PSNR against the rate beside CS and zero filling.

Antun et al., PNAS 2020, Fig. 4 last row.

A network trained at one sampling rate is fed measurements at other rates, from *nested*
masks (every line sampled at a lower rate is also sampled at every higher rate,
:func:`mrijax.masks.nested`), and its PSNR is plotted against the rate, beside
compressed sensing and zero filling.  A method one can trust gets better with more
samples; the paper found that several networks get *worse* (Ell 50, DAGAN), or stagnate
(MRI-VN), and that only Deep MRI (the published D5-C5, ``--model=deepmri_npz``) improves
like the state-of-the-art methods do.

The network takes the mask as an input, so all rates and a batch of images run as one
compiled call: masks ``(R, 1, H, W)`` against k-space ``(R, B, H, W)``; compressed
sensing (:func:`mrijax.cs.reconstruct` accepts a mask per problem) the same way.

Writes into ``--out_dir``:

* ``more_samples.png``: PSNR and SSIM against the realised sampling rate (mean over the
  images, thick; each image, thin), the training rate ``--train_rate`` marked in red, and
  reconstructions of image ``--example_image`` at a few rates (``--show_rates``).
* ``results.json``: rates (requested and realised), PSNR/SSIM per rate and image for the
  network, CS and zero filling, the per-method summary (does the curve rise?), the model
  and all flags.
* ``arrays.npz``: images, masks, the reconstructions' magnitudes, PSNR and SSIM tables.

Each finished batch of images is saved as it goes (``net_batch{j}.npz``,
``cs_batch{j}.npz``); ``--resume`` continues an interrupted run from there.

Example (the shipped checkpoint on MNI axial slices; the published network with
``--model=deepmri_npz --weights=../shared/data/d5_c5.npz``)::

    python -m experiments.more_samples --out_dir=runs/more_samples
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
from mrijax import fourier, masks, metrics

MODEL_HELP = ("A checkpoint folder (experiments.train), 'deepmri_npz' (the published D5-C5, "
              "with --weights) or 'cs' (compressed sensing only). The model must accept any mask "
              "(a cascade; AUTOMAP is tied to one mask).")
DEFAULT_RATES = ["0.1", "0.15", "0.2", "0.25", "0.3", "0.35", "0.4", "0.45", "0.5"]


def define_flags() -> flags.FlagValues:
    fv = flags.FlagValues()
    d = dict(flag_values=fv)
    common.define_model_flags(fv, model_help=MODEL_HELP, cs_iters_lower_bound=1)
    common.define_image_flags(fv, images="mni:axial", num_images=4, size=128)
    common.define_out_flags(fv)
    # The nested masks: one per --rates entry instead of one --acceleration.
    common.define_mask_flags(fv, kinds=masks.NESTED_KINDS, acceleration_flag=False)
    flags.DEFINE_list("rates", DEFAULT_RATES, "Sampling rates in (0, 1] (line kinds realise "
                      "floor(W * rate) / W).", **d)
    flags.DEFINE_float("train_rate", 0.33, "The rate the network was trained at (marked in the figure; "
                       "0.33 for the shipped checkpoint and D5-C5).", **d)
    flags.DEFINE_integer("seed", 0, "Seed of --images=ellipses.", lower_bound=0, **d)
    flags.DEFINE_bool("compare_cs", True, "Add compressed sensing.", **d)
    flags.DEFINE_integer("batch", 8, "Images per compiled call (each with all the rates).",
                         lower_bound=1, **d)
    flags.DEFINE_list("show_rates", [], "Rates of the example reconstructions (the nearest of --rates is "
                      "shown; default: lowest, nearest the training rate, highest).", **d)
    flags.DEFINE_integer("example_image", 0, "Index of the image shown.", lower_bound=0, **d)
    return fv


# Flags that do not change the numbers: a resumed run may differ in them.
_NOT_NUMERIC = {"resume", "out_dir", "show_rates", "example_image"}


def _rates(fv):
    rates = common.parse_floats(fv.rates, "rates")
    if len(rates) < 2:
        raise ValueError(f"--rates needs at least two rates, got {fv.rates}")
    if any(not 0 < r <= 1 for r in rates):
        raise ValueError(f"--rates must lie in (0, 1], got {fv.rates}")
    if len(set(rates)) != len(rates):
        raise ValueError(f"--rates must be distinct, got {fv.rates}")
    return np.sort(np.asarray(rates))


def _nearest(realised, rate):
    return int(np.argmin(np.abs(realised - rate)))


def _show_indices(fv, realised):
    if fv.show_rates:
        wanted = common.parse_floats(fv.show_rates, "show_rates")
    else:
        wanted = [realised[0], fv.train_rate, realised[-1]]
    return sorted({_nearest(realised, r) for r in wanted})


def _evaluate(recon, images, masks_r, batch, label, save_path):
    """PSNR/SSIM of ``recon`` at every rate for every image, ``batch`` images per compiled call.

    ``recon`` closes over the masks ``(R, 1, H, W)`` and maps k-space ``(R, B, H, W)`` to
    images of that shape.  The last batch is padded (repeating its last image) so that every
    call has one shape and compiles once.  Returns a dict with ``abs`` (R, N, H, W), ``psnr``
    and ``ssim`` (R, N).
    """
    f = jax.jit(recon)
    n = images.shape[0]
    parts = []
    n_batches = -(-n // batch)
    for j in range(n_batches):
        path = save_path(j)
        if path is not None:
            common.note_progress(path, f"after {label} batch {j + 1}/{n_batches} (saved)")
        if path is not None and os.path.exists(path):
            print(f"[{label} batch {j + 1}/{n_batches}] already finished, loading it", flush=True)
            parts.append(common.load_npz(path))
            continue
        t0 = time.time()
        xb = images[j * batch:(j + 1) * batch]
        b = xb.shape[0]
        xp = np.concatenate([xb, np.repeat(xb[-1:], batch - b, axis=0)]) if n > batch else xb
        y = fourier.forward(jnp.asarray(xp)[None], jnp.asarray(masks_r))       # (R, B, H, W)
        mag = jnp.abs(f(y))
        ref = jnp.broadcast_to(jnp.abs(jnp.asarray(xp)), mag.shape)
        # Metrics on the padded batch too (one shape, one compile), then the padding dropped.
        part = {"abs": np.asarray(mag[:, :b], np.float32), "psnr": np.asarray(metrics.psnr(mag, ref))[:, :b],
                "ssim": np.asarray(metrics.ssim(mag, ref))[:, :b]}
        if path is not None:
            common.save_npz(path, **part)
        parts.append(part)
        print(f"[{label} batch {j + 1}/{n_batches}] {b} image(s) x {masks_r.shape[0]} rates, mean PSNR "
              f"{np.mean(part['psnr']):.2f} dB  {time.time() - t0:.1f}s", flush=True)
    return {k: np.concatenate([p[k] for p in parts], axis=1) for k in parts[0]}


def curve_summary(psnr, ssim, realised, train_index) -> dict:
    """Does the PSNR curve ``psnr`` (R rates, N images) rise with the rate?

    Reports the mean curve, its steps between neighbouring rates, whether every step is
    positive, the gain from the lowest (and from the training) rate to the highest, and how
    many images end higher at the highest rate than at the training rate.
    """
    mean = psnr.mean(axis=1)
    steps = np.diff(mean)
    return {"mean_psnr": mean, "mean_ssim": ssim.mean(axis=1), "mean_psnr_steps": steps,
            "mean_rises_at_every_step": bool(np.all(steps > 0)),
            "largest_mean_decrease": float(max(0.0, -steps.min())),
            "psnr_gain_lowest_to_highest": float(mean[-1] - mean[0]),
            "psnr_gain_train_to_highest": float(mean[-1] - mean[train_index]),
            "images_higher_at_highest_than_at_train": int(np.sum(psnr[-1] > psnr[train_index])),
            "psnr_at_train_rate": float(mean[train_index])}


def _figure(fv, arrays, methods, realised, train_index, show):
    plt = common.pyplot()
    has_cs = "cs_abs" in arrays
    rows = 1 + (1 if "net_abs" in arrays else 0) + (1 if has_cs else 0)
    ncols = max(4, 1 + len(show))
    fig = plt.figure(figsize=(2.5 * ncols, 3.4 + 2.6 * (rows - 1)))
    outer = fig.add_gridspec(2, 1, height_ratios=[1.3, rows - 1], hspace=0.3)
    top = outer[0].subgridspec(1, 2, wspace=0.25)
    gs = outer[1].subgridspec(rows - 1, ncols, hspace=0.3)
    ax_p = fig.add_subplot(top[0, 0])
    ax_s = fig.add_subplot(top[0, 1])
    pct = 100 * realised
    net_name = "D5-C5" if fv.model == "deepmri_npz" else os.path.basename(os.path.normpath(fv.model))
    styles = {"net": ("C0", "-", net_name), "cs": ("C1", "--", "CS"), "zf": ("0.5", ":", "zero filled")}
    for m in methods:
        color, ls, name = styles[m]
        for ax, key in ((ax_p, "psnr"), (ax_s, "ssim")):
            table = arrays[f"{m}_{key}"]
            for i in range(table.shape[1]):
                ax.plot(pct, table[:, i], color=color, ls=ls, lw=0.6, alpha=0.35)
            ax.plot(pct, table.mean(axis=1), color=color, ls=ls, lw=2, marker="o", ms=3, label=name)
    for ax, t in ((ax_p, "PSNR (dB)"), (ax_s, "SSIM")):
        ax.axvline(100 * fv.train_rate, color="red", lw=1.2, label=f"trained at {100 * fv.train_rate:.0f}%")
        ax.set_xlabel("sampling rate (%)")
        ax.set_ylabel(t)
        ax.grid(alpha=0.3)
    ax_p.legend(fontsize=7)
    ax_p.set_title("PSNR vs rate (thick: mean; thin: each image)", fontsize=9)
    ax_s.set_title("SSIM vs rate", fontsize=9)

    i = fv.example_image
    x = np.abs(arrays["x"][i])
    vmax = float(x.max()) or 1.0
    r = 0
    for m in ("net", "cs"):
        if f"{m}_abs" not in arrays:
            continue
        ax = fig.add_subplot(gs[r, 0])
        ax.imshow(x, cmap="gray", vmin=0, vmax=vmax)
        ax.set_title(f"image {i} (truth)", fontsize=8)
        ax.set_axis_off()
        for c, s in enumerate(show):
            ax = fig.add_subplot(gs[r, 1 + c])
            ax.imshow(arrays[f"{m}_abs"][s, i], cmap="gray", vmin=0, vmax=vmax)
            ax.set_title(f"{styles[m][2]} at {100 * realised[s]:.1f}%\nPSNR {arrays[f'{m}_psnr'][s, i]:.2f} dB",
                         fontsize=8)
            ax.set_axis_off()
        r += 1
    fig.suptitle("More samples: reconstruction quality against the sampling rate (nested masks)", fontsize=10)
    common.save_figure(os.path.join(fv.out_dir, "more_samples.png"), fig)


def run(fv) -> dict:
    """The whole job for parsed flags ``fv``; returns the results dict written to results.json."""

    # Everything that can be wrong with the flags fails here, before any long computation.
    size = fv.size
    rates = _rates(fv)
    if not 0 < fv.train_rate <= 1:
        raise ValueError(f"--train_rate must lie in (0, 1], got {fv.train_rate}")
    if fv.example_image >= fv.num_images:
        raise ValueError(f"--example_image={fv.example_image} but only --num_images={fv.num_images}")
    kw = {"sample_n": fv.sample_n} if fv.mask == "gaussian_lines" else {}
    mask_stack = masks.nested(fv.mask, (size, size), rates, seed=fv.mask_seed, **kw)   # (R, H, W)
    realised = np.asarray(masks.sampling_rate(mask_stack))
    train_index = _nearest(realised, fv.train_rate)
    show = _show_indices(fv, realised)
    images = common.load_checked_images(fv.images, size, count=fv.num_images, seed=fv.seed)
    if fv.example_image >= images.shape[0]:
        raise ValueError(f"--example_image={fv.example_image} but --images gave {images.shape[0]} image(s)")
    masks_r = mask_stack[:, None]                                                 # (R, 1, H, W)
    recon, model_info = (None, {"model": "cs"}) if fv.model == "cs" else common.load_reconstruction(
        fv.model, masks_r, weights=fv.weights, flip_filters=fv.flip_filters, mask_kind=fv.mask)
    cs_recon = None
    if fv.compare_cs or fv.model == "cs":
        cs_recon, _ = common.load_reconstruction(
            "cs", masks_r, cs_iters=fv.cs_iters, cs_options=common.cs_options(fv))

    common.prepare_out_dir(fv, _NOT_NUMERIC)

    t0 = time.time()
    batch = min(fv.batch, images.shape[0])
    saver = lambda prefix: (lambda j: os.path.join(fv.out_dir, f"{prefix}_batch{j}.npz"))
    arrays = {"x": images, "masks": mask_stack, "rates": rates, "realised_rates": realised}
    methods = []
    if recon is not None:
        ev = _evaluate(recon, images, masks_r, batch, "network", saver("net"))
        arrays.update(net_abs=ev["abs"], net_psnr=ev["psnr"], net_ssim=ev["ssim"])
        methods.append("net")
    if cs_recon is not None:
        ev = _evaluate(cs_recon, images, masks_r, batch, "CS", saver("cs"))
        arrays.update(cs_abs=ev["abs"], cs_psnr=ev["psnr"], cs_ssim=ev["ssim"])
        methods.append("cs")
    # Zero filling A* y: the floor every method should beat (cheap, all at once).
    zf = jnp.abs(fourier.zero_filled(fourier.forward(jnp.asarray(images)[None], masks_r), masks_r))
    ref = jnp.broadcast_to(jnp.abs(jnp.asarray(images)), zf.shape)
    arrays.update(zf_psnr=np.asarray(metrics.psnr(zf, ref)), zf_ssim=np.asarray(metrics.ssim(zf, ref)))
    methods.append("zf")

    names = {"net": "network", "cs": "cs", "zf": "zero_filled"}
    per_method = {names[m]: {"psnr": arrays[f"{m}_psnr"], "ssim": arrays[f"{m}_ssim"],
                             "summary": curve_summary(arrays[f"{m}_psnr"], arrays[f"{m}_ssim"], realised,
                                                      train_index)}
                  for m in methods}
    results = {"model": model_info, "flags": common.flag_dict(fv), "rates": rates, "realised_rates": realised,
               "train_rate": fv.train_rate, "train_rate_index": train_index,
               "nearest_realised_train_rate": realised[train_index], "methods": per_method,
               "seconds": time.time() - t0,
               "definitions": {"psnr": common.PSNR_DEFINITION + ", ref = x, per image (mrijax.metrics.psnr)",
                               "ssim": "mrijax.metrics.ssim on magnitudes",
                               "realised_rates": "fraction of sampled k-space of each nested mask",
                               "rows": "psnr/ssim tables are (rates, images)"}}
    common.save_npz(os.path.join(fv.out_dir, "arrays.npz"), **arrays)
    common.save_json(os.path.join(fv.out_dir, "results.json"), results)
    _figure(fv, arrays, methods, realised, train_index, show)
    for m in methods:
        s = per_method[names[m]]["summary"]
        curve = " ".join(f"{100 * r:.1f}%:{p:.2f}" for r, p in zip(realised, s["mean_psnr"]))
        print(f"{names[m]:>12}: mean PSNR {curve}  (gain lowest->highest {s['psnr_gain_lowest_to_highest']:+.2f} "
              f"dB, train->highest {s['psnr_gain_train_to_highest']:+.2f} dB, rises at every step: "
              f"{s['mean_rises_at_every_step']})", flush=True)
    print(f"done: {images.shape[0]} image(s) x {len(rates)} rates.  Files in {fv.out_dir}", flush=True)
    return results


def main(argv=None) -> int:
    return common.main(define_flags, run, argv)


if __name__ == "__main__":
    sys.exit(main())
