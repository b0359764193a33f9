"""Add symbols and text to an image; measure whether a network and CS reconstruct them (Antun et al., Fig. 4).

The card suits ``♠ ♥ ♦ ♣`` and the text ``CAN U SEE IT`` (drawn with
:mod:`mrijax.data.symbols`, from the font matplotlib ships) are added to an image ``x``:
``x + r``.  The network and compressed sensing (:func:`mrijax.cs.reconstruction_map`)
reconstruct ``x + r`` from ``A(x + r)``, and ``x`` from ``A x``; the zero-filled image
``A*A(x + r)`` is the baseline.  PSNR and SSIM are reported over the whole image and
inside each symbol's region (its bounding box, ``--region_pad`` pixels wider; PSNR also
on the symbol's own pixels), both for ``x + r`` and for the image without the symbols
(the same regions of ``x``), together with the part of each symbol that came back:
``<f(A(x + r)) - f(A x), r_s> / ||r_s||^2`` for the symbol's part ``r_s`` of ``r`` (1: all
of it; for the zero-filled image it is ``<A r, A r_s> / ||r_s||^2``, about the fraction of
``r_s``'s energy that ``A`` measures).

Writes into ``--out_dir``:

* ``structural_change.png``: the paper's row -- ``x + r``, its zoom, the network's and the
  CS reconstruction of ``A(x + r)`` -- over the whole image (top) and zoomed on the
  symbols (bottom), with PSNR/SSIM.
* ``symbols_zoom.png``: one row per symbol: ``x + r``, zero filling, network, CS, zoomed.
* ``results.json``: every number and all flags; ``arrays.npz``: the images, ``r``, the
  symbol masks and boxes, the mask and all reconstructions.

Example::

    python -m experiments.structural_change --out_dir=runs/structural_change
"""

from __future__ import annotations

import os
import sys
import time

import jax
import numpy as np
from absl import flags

from experiments import common
from mrijax import fourier, hallucination, metrics
from mrijax.data import symbols

MODEL_HELP = ("A checkpoint folder (experiments.train), or 'deepmri_npz' (the published D5-C5, "
              "with --weights).")
_DEFAULT_SYMBOLS = ["spade:0.32:0.36:0.08", "heart:0.32:0.64:0.08", "diamond:0.52:0.36:0.08",
                    "club:0.52:0.64:0.08"]


def define_flags() -> flags.FlagValues:
    fv = flags.FlagValues()
    d = dict(flag_values=fv)
    # --cs_iters: the compressed-sensing comparison's iterations.
    common.define_model_flags(fv, model_help=MODEL_HELP)
    common.define_image_flags(fv, images="mni:axial", size=128, single=True, min_size=16)
    common.define_out_flags(fv, resume=False)
    # The paper's Deep MRI row used 25% sampling: --acceleration=4.
    common.define_mask_flags(fv)
    flags.DEFINE_list("symbols", _DEFAULT_SYMBOLS, "Symbols as name:row:col:height (name: spade, heart, "
                      "diamond, club; position and ink height as fractions of the image side).", **d)
    flags.DEFINE_string("text", "CAN U SEE IT", "Text to add ('' for none).", **d)
    flags.DEFINE_list("text_center", ["0.70", "0.5"], "row,col of the text's centre (fractions).", **d)
    flags.DEFINE_float("text_height", 0.055, "Ink height of the text (fraction of the side).", **d)
    flags.DEFINE_float("intensity", 0.6, "Value added inside a symbol (relative to the image's max of 1; "
                       "negative: dark symbols).", **d)
    flags.DEFINE_integer("supersample", 4, "Sub-pixel samples per side for antialiased symbols.",
                         lower_bound=1, **d)
    flags.DEFINE_integer("region_pad", 1, "Pixels added around each symbol's box for its numbers.",
                         lower_bound=0, **d)
    flags.DEFINE_integer("zoom_pad", 3, "Pixels added around the symbols in the zooms.", lower_bound=0, **d)
    flags.DEFINE_integer("seed", 0, "Seed of --images=ellipses.", lower_bound=0, **d)
    return fv


def _symbol_items(fv):
    """Flags -> list of mrijax.data.symbols.Symbol (checked, nothing drawn yet)."""
    items = []
    for spec in fv.symbols:
        parts = spec.split(":")
        if len(parts) != 4:
            raise ValueError(f"--symbols entries must be name:row:col:height, got {spec!r}")
        name = parts[0].strip().lower()
        if name not in symbols.SUITS:
            raise ValueError(f"--symbols: unknown symbol {parts[0]!r}; known: {sorted(symbols.SUITS)}")
        try:
            row, col, height = (float(p) for p in parts[1:])
        except ValueError as e:
            raise ValueError(f"--symbols entry {spec!r}: row, col and height must be numbers") from e
        items.append(symbols.Symbol(name, (row, col), height, fv.intensity))
    if fv.text:
        row, col = common.parse_floats(fv.text_center, "text_center", 2)
        items.append(symbols.Symbol(fv.text, (row, col), fv.text_height, fv.intensity))
    if not items:
        raise ValueError("nothing to add: give --symbols and/or --text")
    if not np.isfinite(fv.intensity) or fv.intensity == 0:
        raise ValueError(f"--intensity must be finite and non-zero, got {fv.intensity}")
    return items


def _label(item):
    return item.text if item.text in symbols.SUITS else f"text '{item.text}'"


def _numbers(images, refs, masks, boxes):
    """PSNR/SSIM over the whole image and per symbol region (box and ink)."""
    out = {"psnr": float(metrics.psnr(np.abs(images), refs)), "ssim": float(metrics.ssim(np.abs(images), refs)),
           "symbols": []}
    for m, box in zip(masks, boxes):
        r0, r1, c0, c1 = box
        region = np.zeros_like(m)
        region[r0:r1, c0:c1] = True
        out["symbols"].append({
            "psnr_box": float(symbols.region_psnr(images, refs, region)),
            "psnr_ink": float(symbols.region_psnr(images, refs, m)),
            "ssim_box": float(symbols.region_ssim(images, refs, box))})
    return out


def run(fv) -> dict:
    """The whole job for parsed flags ``fv``; returns the results dict written to results.json."""

    # Everything that can be wrong with the flags fails here, before any long computation.
    if fv.model == "cs":
        raise ValueError("--model must be a network (CS is always the comparison)")
    items = _symbol_items(fv)
    size = fv.size
    x = np.abs(common.load_checked_images(fv.images, size, count=1, seed=fv.seed)[0]).astype(np.float32)
    r, sym_masks = symbols.render((size, size), items, supersample=fv.supersample)
    boxes = [symbols.bounding_box(m, pad=fv.region_pad, min_size=7) for m in sym_masks]
    zoom = symbols.bounding_box(sym_masks, pad=fv.zoom_pad, min_size=7)
    mask = common.mask_from_flags(fv)
    recon, model_info = common.load_reconstruction(fv.model, mask, weights=fv.weights,
                                                   flip_filters=fv.flip_filters, mask_kind=fv.mask)
    cs_recon, cs_info = common.load_reconstruction("cs", mask, cs_iters=fv.cs_iters,
                                                   cs_options=common.cs_options(fv))
    os.makedirs(fv.out_dir, exist_ok=True)

    t0 = time.time()
    x_sym = x + r
    both = np.stack([x_sym, x])                                   # with and without the symbols
    y = fourier.forward(both, mask)
    recons = {"zero_filled": np.asarray(fourier.adjoint(y, mask)),
              "network": np.asarray(jax.jit(jax.vmap(recon))(y))}
    print(f"network done ({time.time() - t0:.1f}s)", flush=True)
    recons["cs"] = np.asarray(jax.jit(jax.vmap(cs_recon))(y))
    print(f"compressed sensing done ({time.time() - t0:.1f}s)", flush=True)
    arrays = dict(x=x, r=r, x_with_symbols=x_sym, symbol_masks=sym_masks, boxes=np.asarray(boxes),
                  zoom_box=np.asarray(zoom), mask=mask, **{f"{k}_with_symbols": v[0] for k, v in recons.items()},
                  **{f"{k}_without_symbols": v[1] for k, v in recons.items()})
    common.save_npz(os.path.join(fv.out_dir, "arrays.npz"), **arrays)

    labels = [_label(it) for it in items]
    methods = {}
    for name, rec in recons.items():
        with_s = _numbers(rec[0], x_sym, sym_masks, boxes)
        without = _numbers(rec[1], x, sym_masks, boxes)
        for j, m in enumerate(sym_masks):
            # The symbol's own part of r (symbols do not overlap in a sensible layout).
            r_s = np.where(m, r, 0.0)
            with_s["symbols"][j]["recovered"] = float(hallucination.transferred_fraction(rec[0], rec[1], r_s))
        methods[name] = {"with_symbols": with_s, "without_symbols": without}
    per_symbol = []
    for j, (it, lab) in enumerate(zip(items, labels)):
        per_symbol.append({"label": lab, "text": it.text, "center": list(it.center), "height": it.height,
                           "box": list(boxes[j]), "pixels": int(sym_masks[j].sum()),
                           **{f"{m}_{k}": methods[m]["with_symbols"]["symbols"][j][k]
                              for m in methods for k in ("psnr_box", "psnr_ink", "ssim_box", "recovered")},
                           **{f"{m}_{k}_without_symbols": methods[m]["without_symbols"]["symbols"][j][k]
                              for m in methods for k in ("psnr_box", "ssim_box")}})
    results = {"model": model_info, "cs": cs_info, "flags": common.flag_dict(fv),
               "sampling_rate": float(mask.mean()), "image_shape": [size, size],
               "r_norm": float(np.linalg.norm(r)), "x_norm": float(np.linalg.norm(x)),
               "methods": methods, "symbols": per_symbol, "seconds": time.time() - t0,
               "definitions": {
                   "psnr": common.PSNR_DEFINITION + ", ref = x + r (with symbols) or x; regions use the whole "
                                                    "image's max|ref|",
                   "psnr_box / ssim_box": "inside the symbol's bounding box (+ region_pad pixels, at least 7x7)",
                   "psnr_ink": "on the pixels the symbol covers",
                   "recovered": "<f(A(x + r)) - f(A x), r_s> / ||r_s||^2, r_s the symbol's part of r"}}
    common.save_json(os.path.join(fv.out_dir, "results.json"), results)
    _figures(fv, arrays, results, labels, boxes, zoom)

    net, cs = methods["network"]["with_symbols"], methods["cs"]["with_symbols"]
    print(f"done: PSNR with symbols: network {net['psnr']:.2f} dB, CS {cs['psnr']:.2f} dB, zero filling "
          f"{methods['zero_filled']['with_symbols']['psnr']:.2f} dB", flush=True)
    for s in per_symbol:
        print(f"  {s['label']:<22s} box PSNR network {s['network_psnr_box']:.2f} / CS {s['cs_psnr_box']:.2f} dB"
              f"  SSIM {s['network_ssim_box']:.3f} / {s['cs_ssim_box']:.3f}  recovered "
              f"{s['network_recovered']:.2f} / {s['cs_recovered']:.2f}", flush=True)
    print(f"Files in {fv.out_dir}", flush=True)
    return results


def _figures(fv, arrays, results, labels, boxes, zoom):
    plt = common.pyplot()
    from matplotlib.patches import Rectangle
    m = results["methods"]
    vmax = float(np.abs(arrays["x_with_symbols"]).max())
    r0, r1, c0, c1 = zoom
    panels = [("x + r", arrays["x_with_symbols"], None),
              ("network f(A(x + r))", arrays["network_with_symbols"], m["network"]["with_symbols"]),
              ("CS from A(x + r)", arrays["cs_with_symbols"], m["cs"]["with_symbols"]),
              ("zero filling A*A(x + r)", arrays["zero_filled_with_symbols"], m["zero_filled"]["with_symbols"])]
    fig, axes = plt.subplots(2, len(panels), figsize=(3.1 * len(panels), 6.4), squeeze=False)
    for c, (title, img, num) in enumerate(panels):
        mag = np.abs(img)
        sub = "" if num is None else f"\nPSNR {num['psnr']:.2f} dB  SSIM {num['ssim']:.3f}"
        axes[0, c].imshow(mag, cmap="gray", vmin=0, vmax=vmax)
        axes[0, c].add_patch(Rectangle((c0 - 0.5, r0 - 0.5), c1 - c0, r1 - r0, edgecolor="yellow",
                                       facecolor="none", lw=0.8))
        axes[0, c].set_title(title + sub, fontsize=8)
        axes[1, c].imshow(mag[r0:r1, c0:c1], cmap="gray", vmin=0, vmax=vmax)
        if num is not None:
            box_psnr = np.mean([s["psnr_box"] for s in num["symbols"]])
            axes[1, c].set_title(f"zoom; mean symbol-box PSNR {box_psnr:.2f} dB", fontsize=8)
        else:
            axes[1, c].set_title("x + r (zoomed)", fontsize=8)
        for a in axes[:, c]:
            a.set_axis_off()
    fig.suptitle(f"Structural change: symbols added to the image, {100 * results['sampling_rate']:.0f}% "
                 "sampling", fontsize=10)
    common.save_figure(os.path.join(fv.out_dir, "structural_change.png"), fig)

    cols = [("x + r", "x_with_symbols", None), ("zero filling", "zero_filled_with_symbols", "zero_filled"),
            ("network", "network_with_symbols", "network"), ("CS", "cs_with_symbols", "cs")]
    fig, axes = plt.subplots(len(labels), len(cols), figsize=(2.4 * len(cols), 1.9 * len(labels) + 0.6),
                             squeeze=False)
    for j, (lab, (b0, b1, d0, d1)) in enumerate(zip(labels, boxes)):
        for c, (title, key, meth) in enumerate(cols):
            ax = axes[j, c]
            ax.imshow(np.abs(arrays[key])[b0:b1, d0:d1], cmap="gray", vmin=0, vmax=vmax)
            if meth is None:
                ax.set_title(f"{lab}: {title}", fontsize=7)
            else:
                s = m[meth]["with_symbols"]["symbols"][j]
                ax.set_title(f"{title}: {s['psnr_box']:.1f} dB, SSIM {s['ssim_box']:.2f},\n"
                             f"recovered {s['recovered']:.2f}", fontsize=7)
            ax.set_axis_off()
    common.save_figure(os.path.join(fv.out_dir, "symbols_zoom.png"), fig)


def main(argv=None) -> int:
    return common.main(define_flags, run, argv)


if __name__ == "__main__":
    sys.exit(main())
