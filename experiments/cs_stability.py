"""Measure how stable compressed sensing is: CS settings under their own worst-case and random perturbations.

Antun et al. (PNAS 2020) use sparsity-regularised reconstruction as the stable reference
against which the networks' instabilities are measured.  This job measures that claim for
:mod:`mrijax.cs` over a list of settings (the form of data consistency and the weights), so
the accuracy a setting buys can be read beside the stability it costs.  For every setting
(``--setting``, repeatable) and every image it reports:

* accuracy: PSNR of the clean reconstruction and its gain over zero filling;
* the worst case *of this setting*: :func:`mrijax.attacks.worst_case` run against the CS map
  itself (projected ascent in the ball ``||r|| <= --radius * ||x||``, ``--starts`` random
  starts per image, the best kept), its output change ``||f(y + e) - f(y)||`` (``e = A r``),
  its gain ``||f(y + e) - f(y)|| / ||e||``, its PSNR change (perturbed - clean, negative =
  worse), and the share of the change that
  lies in the kernel of ``A`` (:func:`mrijax.hallucination.error_split`);
* random perturbations of exactly the same norm (:func:`mrijax.attacks.noise_baseline`,
  ``--noise_draws``) and the **ratio** worst-case output change / mean random output change;
* the linearised gain (``--lipschitz_iters``, :func:`mrijax.attacks.local_lipschitz`): the
  largest singular value of the Jacobian of ``e -> f(y + e)``, the worst gain of vanishingly
  small perturbations, and its ratio to the random gain.  A search gain near it says the
  worst case is a property of the map's linearisation, not a large-perturbation effect;
* with ``--perturbations=RUN/arrays.npz`` (the ``arrays.npz`` of an
  ``experiments.worst_case`` run, e.g. on the published D5-C5): the PSNR change of each
  setting under *that* model's worst-case perturbations (every snapshot), beside the change
  under Gaussian noise on the sampled k-space entries of the same ``||A r||``.  The images
  and the mask then come from that file (``--images``, ``--num_images``, ``--size`` and the
  mask flags are not used).

The yardstick (``--domain``).  With ``--domain=measurement`` (default) the search and the
random draws both perturb the measurements, ``y + e`` with ``e`` on the sampled entries and
``||e||`` equal, so Gaussian *measurement* noise is the reference: every linear map with
exact data consistency whose kernel part does not react to ``e`` (zero filling) scores a
ratio of exactly 1.  With ``--domain=image`` both perturb the image (``y + A r``, ``||r||``
equal): the search puts all of ``r`` where ``A`` sees it while a random ``r`` keeps only
about ``sqrt(rate)`` of its norm there, so zero filling already scores ``1 / sqrt(rate)``.
The setting ``zero_filled`` is that gain-1 reference.

Settings.  ``--setting`` takes ``FORM[:key=value...]`` with ``FORM`` one of ``constrained``
(``A x = y`` exactly), ``penalised`` (``1/2 ||A x - y||^2 + ...``) or ``zero_filled``, and
keys ``tv``, ``wavelet_weight``, ``delta`` (constrained only: ``||A x - y|| <= delta ||y||``),
``tgv`` (second-order TGV in place of TV, ``tgv`` its second-order weight), ``iters``, ``wavelet``, ``levels``, ``penalise_approximation`` (``true``/``false``; :func:`mrijax.cs.reconstruct`;
unset keys take :data:`mrijax.cs.DEFAULTS`).  Example: ``penalised:tv=1e-2:wavelet_weight=1e-3``.

Writes into ``--out_dir``:

* ``cs_stability.png``: ratio against the PSNR gain over zero filling (one point per
  setting); the PSNR changes (worst case, random, and the foreign perturbations if given);
  one row of output changes ``|f(y + e) - f(y)|`` of the first image, one panel per setting.
* ``results.json``: per setting and image, every number above; the flags.
* ``arrays.npz``: images, mask, and per setting the clean reconstructions, worst-case
  perturbations and perturbed reconstructions (``setting{i}_...``).

Each finished setting is saved (``setting{i}.npz``); ``--resume`` continues an interrupted
run from there.

Example (two 64 x 64 MNI axial slices, the default sweep)::

    python -m experiments.cs_stability --out_dir=runs/cs_stability
"""

from __future__ import annotations

import math
import os
import time

import jax
import numpy as np
from absl import flags

from experiments import common
from mrijax import attacks, fourier, hallucination, metrics, wavelets

DEFAULT_SETTINGS = (
    "zero_filled",
    "constrained",
    "penalised:tv=1e-3:wavelet_weight=1e-4",
    "penalised:tv=1e-2:wavelet_weight=1e-3",
    "penalised:tv=3e-2:wavelet_weight=3e-3",
    "penalised:tv=1e-1:wavelet_weight=1e-2",
)

FORMS = ("constrained", "penalised", "zero_filled")
_FLOAT_KEYS = ("tv", "wavelet_weight", "delta", "tgv")
_INT_KEYS = ("iters", "levels")


def define_flags() -> flags.FlagValues:
    fv = flags.FlagValues()
    d = dict(flag_values=fv)
    common.define_image_flags(fv, images="mni:axial", num_images=2, size=64)
    common.define_out_flags(fv)
    common.define_mask_flags(fv, sample_n=4)
    flags.DEFINE_multi_string("setting", list(DEFAULT_SETTINGS),
                              "A CS setting FORM[:key=value...], FORM in constrained|penalised|zero_filled, keys "
                              "tv, wavelet_weight, delta (constrained only), tgv, iters, wavelet, levels, "
                              "penalise_approximation (repeat the flag for a sweep).", **d)
    flags.DEFINE_string("perturbations", None, "arrays.npz of an experiments.worst_case run: also measure every "
                        "setting under those perturbations (images and mask come from the file).", **d)
    flags.DEFINE_enum("perturbations_domain", "image", ["image", "measurement"],
                      "Where the --perturbations file's r live (its run's --domain).", **d)
    flags.DEFINE_enum("domain", "measurement", ["image", "measurement"],
                      "Where the search and the random draws perturb (module docstring).", **d)
    common.define_search_flags(fv, steps=50)
    flags.DEFINE_integer("starts", 1, "Random starts per image (the best is kept).", lower_bound=1, **d)
    flags.DEFINE_integer("noise_draws", 8, "Random perturbations per image (and per foreign snapshot).",
                         lower_bound=1, **d)
    flags.DEFINE_integer("lipschitz_iters", 20, "Power iterations for the linearised gain of each setting "
                         "(mrijax.attacks.local_lipschitz; 0: skip).", lower_bound=0, **d)
    flags.DEFINE_integer("seed", 0, "Seed of the starts, the random draws and --images=ellipses.", lower_bound=0, **d)
    flags.DEFINE_integer("chunk", 25, "Search iterations per compiled call between progress lines.",
                         lower_bound=1, **d)
    return fv


_NOT_NUMERIC = {"resume", "chunk", "out_dir"}
_SEARCH_STREAM, _NOISE_STREAM, _FOREIGN_NOISE_STREAM, _LIPSCHITZ_STREAM = 0, 1000, 2000, 3000


def parse_setting(text: str) -> dict:
    """``"penalised:tv=1e-2:wavelet_weight=1e-3"`` -> ``{"form": "penalised", "options": {...}}``.

    ``options`` are keyword arguments of :func:`mrijax.cs.reconstruction_map` (with
    ``constrained`` set from the form); ``zero_filled`` takes no keys.  Raises ``ValueError``
    naming the setting and the bad part.
    """
    parts = [p.strip() for p in str(text).split(":")]
    form = parts[0].lower()
    if form not in FORMS:
        raise ValueError(f"--setting={text!r}: the form must be one of {FORMS}, got {parts[0]!r}")
    options = {}
    for part in parts[1:]:
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"--setting={text!r}: expected key=value, got {part!r}")
        if form == "zero_filled":
            raise ValueError(f"--setting={text!r}: zero_filled takes no options")
        if key in options:
            raise ValueError(f"--setting={text!r}: {key} given twice")
        try:
            if key in _FLOAT_KEYS:
                v = float(value)
                if not (math.isfinite(v) and v >= 0):
                    raise ValueError
            elif key in _INT_KEYS:
                v = int(value)
                if v < (1 if key == "iters" else 0):
                    raise ValueError
            elif key == "penalise_approximation":
                v = value.strip().lower()
                if v not in ("true", "false"):
                    raise ValueError
                v = v == "true"
            elif key == "wavelet":
                v = value.strip().lower()
                if v not in wavelets.WAVELETS:
                    raise ValueError
            else:
                raise KeyError(key)
        except KeyError:
            raise ValueError(f"--setting={text!r}: unknown key {key!r}; use one of "
                             f"{_FLOAT_KEYS + _INT_KEYS + ('wavelet', 'penalise_approximation')}") from None
        except ValueError:
            raise ValueError(f"--setting={text!r}: bad value for {key}: {value!r}") from None
        options[key] = v
    if form != "zero_filled":
        options["constrained"] = form == "constrained"
        if options.get("tv", 1.0) == 0 and options.get("wavelet_weight", 1.0) == 0:
            raise ValueError(f"--setting={text!r}: tv and wavelet_weight are both 0 (no regulariser)")
    return {"form": form, "options": options, "name": text}


def _reconstruction(setting, mask):
    """The setting's map ``f(k) -> image``; an option the solver refuses raises naming the setting."""
    model = "zero_filled" if setting["form"] == "zero_filled" else "cs"
    try:
        return common.load_reconstruction(model, mask, cs_options=setting["options"])[0]
    except (ValueError, TypeError) as e:
        raise ValueError(f"--setting={setting['name']!r}: {e}") from None


def _load_perturbations(path):
    """``(x, mask, snapshots)`` from a worst_case ``arrays.npz``, checked before any work."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--perturbations={path!r}: no such file")
    with np.load(path, allow_pickle=False) as f:
        missing = [k for k in ("x", "mask", "snapshots") if k not in f.files]
        if missing:
            raise ValueError(f"--perturbations={path!r} lacks {missing}: expected the arrays.npz of an "
                             "experiments.worst_case run")
        x, mask, snaps = np.asarray(f["x"]), np.asarray(f["mask"]), np.asarray(f["snapshots"])
    if x.ndim != 3 or mask.shape != x.shape[1:] or snaps.shape[1:] != x.shape:
        raise ValueError(f"--perturbations={path!r}: shapes x {x.shape}, mask {mask.shape}, snapshots "
                         f"{snaps.shape} do not fit (want (N, H, W), (H, W), (S, N, H, W))")
    for name, a in (("x", x), ("snapshots", snaps)):
        if not np.all(np.isfinite(a)):
            raise ValueError(f"--perturbations={path!r}: {name} holds NaN or inf")
    common.check_images(x, f"--perturbations={path!r} (its images x)")
    return x, mask.astype(bool), snaps


def _measure(fv, setting, index, images, mask, foreign, psnr_zero_filled):
    """All numbers of one setting: clean accuracy, its own worst case, noise, foreign perturbations."""
    recon = _reconstruction(setting, mask)
    n, s = images.shape[0], fv.starts
    key = jax.random.fold_in(jax.random.key(fv.seed), _SEARCH_STREAM)
    report = common.search_progress(f"setting {index}: {setting['name']}", fv.steps)

    copies = np.repeat(images, s, axis=0)                      # image i's starts are rows i*s ... i*s+s-1
    res = attacks.worst_case(recon, copies, mask, key=key, steps=fv.steps, radius=fv.radius,
                             radius_relative_to=fv.radius_relative_to, lr=fv.lr, momentum=fv.momentum,
                             tau=fv.tau, domain=fv.domain, chunk=fv.chunk, callback=report)
    ev_all = attacks.evaluate(recon, copies, mask, np.asarray(res.r), domain=fv.domain)
    best = np.argmax(np.asarray(ev_all["diff_norm"]).reshape(n, s), axis=1)
    rows = np.arange(n) * s + best
    r = np.asarray(res.r)[rows]
    ev = {k: np.asarray(v)[rows] for k, v in ev_all.items()}

    change = hallucination.error_split(ev["perturbed"], ev["clean"], mask)
    nb = attacks.noise_baseline(recon, images, mask, ev["r_norm"][:, None], fv.noise_draws,
                                jax.random.fold_in(jax.random.key(fv.seed), _NOISE_STREAM), domain=fv.domain)
    out = dict(clean=ev["clean"], r=r, perturbed=ev["perturbed"], psnr_clean=ev["psnr_clean"],
               psnr_zero_filled=psnr_zero_filled, worst_diff_norm=ev["diff_norm"],
               worst_r_norm=ev["r_norm"], worst_Ar_norm=ev["Ar_norm"], worst_psnr_change=common.psnr_change(ev),
               worst_kernel_norm=np.asarray(change["kernel_norm"]), best_start=best,
               start_diff_norm=np.asarray(ev_all["diff_norm"]).reshape(n, s),
               noise_diff_norm=np.asarray(nb["diff_norm"])[:, 0], noise_psnr_change=common.psnr_change(nb)[:, 0],
               noise_Ar_norm=np.asarray(nb["Ar_norm"])[:, 0])
    if fv.lipschitz_iters > 0:
        ll = attacks.local_lipschitz(recon, images, mask, fv.lipschitz_iters,
                                     jax.random.fold_in(jax.random.key(fv.seed), _LIPSCHITZ_STREAM))
        out["lipschitz_gain"] = np.asarray(ll["gain"])
    if foreign is not None:
        evf = attacks.evaluate(recon, images, mask, foreign, domain=fv.perturbations_domain)
        ar = np.moveaxis(np.asarray(evf["Ar_norm"]), 0, -1)    # (N, S): the same ||A r|| as noise on y
        nbf = attacks.noise_baseline(recon, images, mask, ar, fv.noise_draws,
                                     jax.random.fold_in(jax.random.key(fv.seed), _FOREIGN_NOISE_STREAM),
                                     domain="measurement")
        out.update(foreign_psnr_change=common.psnr_change(evf), foreign_diff_norm=np.asarray(evf["diff_norm"]),
                   foreign_Ar_norm=np.asarray(evf["Ar_norm"]),
                   foreign_noise_psnr_change=common.psnr_change(nbf),
                   foreign_noise_diff_norm=np.asarray(nbf["diff_norm"]))
    return out


def summarise(setting, m) -> dict:
    """The per-setting numbers of results.json from :func:`_measure`'s arrays."""
    noise_mean = m["noise_diff_norm"].mean(axis=1)
    noise_gain = np.mean(m["noise_diff_norm"] / m["noise_Ar_norm"], axis=1)   # per image
    ratio = m["worst_diff_norm"] / noise_mean
    gain = m["worst_diff_norm"] / m["worst_Ar_norm"]
    e = {"setting": setting["name"], "form": setting["form"], "options": setting["options"],
         "psnr_clean": float(m["psnr_clean"].mean()), "psnr_zero_filled": float(m["psnr_zero_filled"].mean()),
         "gain_over_zero_filled_db": float((m["psnr_clean"] - m["psnr_zero_filled"]).mean()),
         "worst_psnr_change": float(m["worst_psnr_change"].mean()),
         "worst_diff_norm": float(m["worst_diff_norm"].mean()),
         "worst_gain": float(gain.mean()),
         "worst_kernel_share": float(np.mean(m["worst_kernel_norm"] / m["worst_diff_norm"])),
         "noise_psnr_change": float(m["noise_psnr_change"].mean()), "noise_diff_norm": float(noise_mean.mean()),
         "noise_gain": float(noise_gain.mean()),
         "ratio_worst_to_noise": float(ratio.mean()), "ratio_worst_to_noise_max": float(ratio.max()),
         "per_image": [{"psnr_clean": m["psnr_clean"][i], "psnr_zero_filled": m["psnr_zero_filled"][i],
                        "worst_psnr_change": m["worst_psnr_change"][i], "worst_diff_norm": m["worst_diff_norm"][i],
                        "worst_r_norm": m["worst_r_norm"][i], "worst_Ar_norm": m["worst_Ar_norm"][i],
                        "worst_gain": gain[i], "noise_diff_norm_mean": noise_mean[i],
                        "noise_psnr_change_mean": m["noise_psnr_change"][i].mean(),
                        "ratio_worst_to_noise": ratio[i],
                        "best_start": m["best_start"][i]}
                       for i in range(m["psnr_clean"].shape[0])]}
    if "lipschitz_gain" in m:
        # The linearised ratio: the Jacobian's largest singular value over the gain of random noise.
        e["lipschitz_gain"] = float(m["lipschitz_gain"].mean())
        e["ratio_lipschitz_to_noise"] = float(np.mean(m["lipschitz_gain"] / noise_gain))
        for i, p in enumerate(e["per_image"]):
            p["lipschitz_gain"] = m["lipschitz_gain"][i]
    if "foreign_psnr_change" in m:
        # (S, N) against (N, S, draws): per snapshot, mean over images (and draws).
        e["foreign_psnr_change"] = m["foreign_psnr_change"].mean(axis=1).tolist()
        e["foreign_psnr_change_min"] = m["foreign_psnr_change"].min(axis=1).tolist()   # the worst image
        e["foreign_gain"] = (m["foreign_diff_norm"] / m["foreign_Ar_norm"]).mean(axis=1).tolist()
        e["foreign_noise_psnr_change"] = m["foreign_noise_psnr_change"].mean(axis=(0, 2)).tolist()
    return e


def _figure(fv, settings, measured, rows, images):
    plt = common.pyplot()
    k = len(settings)
    has_foreign = "foreign_psnr_change" in rows[0]
    fig = plt.figure(figsize=(max(12, 2.2 * k), 7.4))
    outer = fig.add_gridspec(2, 1, height_ratios=[1.25, 1], hspace=0.3)
    top = outer[0].subgridspec(1, 2, wspace=0.25)
    ax_r, ax_d = fig.add_subplot(top[0, 0]), fig.add_subplot(top[0, 1])
    for i, e in enumerate(rows):
        ax_r.scatter(e["gain_over_zero_filled_db"], e["ratio_worst_to_noise"], color=f"C{i % 10}", s=40,
                     label=f"{i}: {e['setting']}")
        ax_r.annotate(str(i), (e["gain_over_zero_filled_db"], e["ratio_worst_to_noise"]),
                      textcoords="offset points", xytext=(5, 4))
    ax_r.axhline(1.0, color="k", lw=0.8, ls=":")
    ax_r.set_xlabel("clean PSNR gain over zero filling (dB)")
    ax_r.set_ylabel("worst-case / random output change")
    ax_r.set_title(f"{fv.domain}-domain perturbations, ||.|| = {fv.radius:g} ({fv.radius_relative_to})")
    ax_r.legend(fontsize=7, loc="best")

    width = 0.27 if has_foreign else 0.4
    xs = np.arange(k)
    ax_d.bar(xs - width, [e["worst_psnr_change"] for e in rows], width, label="own worst case")
    ax_d.bar(xs, [e["noise_psnr_change"] for e in rows], width, label="random, same norm")
    if has_foreign:
        ax_d.bar(xs + width, [e["foreign_psnr_change"][-1] for e in rows], width,
                 label="foreign worst case (last snapshot)")
        ax_d.scatter(xs + width, [e["foreign_noise_psnr_change"][-1] for e in rows], color="k", marker="_", s=200,
                     zorder=3, label="noise of the same ||A r|| (foreign)")
    ax_d.set_xticks(xs, [str(i) for i in range(k)])
    ax_d.set_xlabel("setting")
    ax_d.axhline(0.0, color="k", lw=0.6)
    ax_d.set_ylabel("PSNR change (dB), perturbed - clean: < 0 worse")
    ax_d.legend(fontsize=7)

    bottom = outer[1].subgridspec(1, k + 1, wspace=0.05)
    changes = [np.abs(m["perturbed"][0] - m["clean"][0]) for m in measured]
    vmax = max(float(c.max()) for c in changes) or 1.0
    ax = fig.add_subplot(bottom[0, 0])
    ax.imshow(np.abs(images[0]), cmap="gray")
    ax.set_title("|x| (image 0)", fontsize=8)
    ax.axis("off")
    for i, c in enumerate(changes):
        ax = fig.add_subplot(bottom[0, i + 1])
        ax.imshow(c, cmap="magma", vmin=0, vmax=vmax)
        ax.set_title(f"{i}: |f(y+e)-f(y)|\nratio {rows[i]['ratio_worst_to_noise']:.2f}", fontsize=8)
        ax.axis("off")
    common.save_figure(os.path.join(fv.out_dir, "cs_stability.png"), fig)


def run(fv) -> dict:
    """The whole job for parsed flags ``fv``; returns the results dict written to results.json."""
    # Everything that can be wrong with the flags fails here, before any long computation.
    settings = [parse_setting(t) for t in fv.setting]
    if not settings:
        raise ValueError("--setting: give at least one setting")
    if not fv.radius > 0:
        raise ValueError(f"--radius must be > 0, got {fv.radius}")
    foreign = None
    if fv.perturbations:
        images, mask, foreign = _load_perturbations(fv.perturbations)
        images = images.astype(np.complex64) if np.iscomplexobj(images) else images.astype(np.float32)
        foreign = foreign.astype(np.complex64)
    else:
        mask = common.mask_from_flags(fv)
        images = common.load_checked_images(fv.images, fv.size, count=fv.num_images, seed=fv.seed)
    for s in settings:   # traces each map once on the mask's shape: bad options surface now
        _reconstruction(s, mask)
    psnr_zero_filled = np.asarray(metrics.psnr(fourier.zero_filled(fourier.forward(images, mask), mask), images))

    common.prepare_out_dir(fv, _NOT_NUMERIC)
    t0 = time.time()
    measured = []
    for i, s in enumerate(settings):
        path = os.path.join(fv.out_dir, f"setting{i}.npz")
        common.note_progress(path, f"after setting {i + 1}/{len(settings)} ({s['name']}, saved)")
        if fv.resume and os.path.exists(path):
            print(f"[setting {i}: {s['name']}] already finished, loading it", flush=True)
            measured.append(common.load_npz(path))
            continue
        m = _measure(fv, s, i, images, mask, foreign, psnr_zero_filled)
        common.save_npz(path, **m)
        measured.append(m)
        e = summarise(s, m)
        print(f"[setting {i}: {s['name']}] clean {e['psnr_clean']:.2f} dB ({e['gain_over_zero_filled_db']:+.2f} "
              f"over zero filling); worst case gain {e['worst_gain']:.2f}, PSNR change {e['worst_psnr_change']:+.2f} "
              f"dB; noise {e['noise_psnr_change']:+.2f} dB; ratio {e['ratio_worst_to_noise']:.2f}"
              + (f"; linearised gain {e['lipschitz_gain']:.2f}, ratio {e['ratio_lipschitz_to_noise']:.2f}"
                 if "lipschitz_gain" in e else ""), flush=True)

    rows = [summarise(s, m) for s, m in zip(settings, measured)]
    arrays = {"x": images, "mask": mask}
    for i, m in enumerate(measured):
        arrays.update({f"setting{i}_{k}": m[k] for k in ("clean", "r", "perturbed")})
    results = {"flags": common.flag_dict(fv), "sampling_rate": float(np.mean(mask)), "settings": rows,
               "seconds": time.time() - t0,
               "definitions": {
                   "ratio_worst_to_noise": "||f(y + e) - f(y)|| for the setting's own worst case e, over the mean "
                                           "of the same for Gaussian e of the same norm (per image, then mean)",
                   "worst_gain": "||f(y + e) - f(y)|| / ||e||, e = A r",
                   "lipschitz_gain": "the largest singular value of the Jacobian of e -> f(y + e) over the sampled "
                                     "k-space (power iteration, mrijax.attacks.local_lipschitz): the worst gain "
                                     "of perturbations too small to leave the linearisation",
                   "ratio_lipschitz_to_noise": "lipschitz_gain over the gain of the Gaussian draws (per image, "
                                               "then mean): the ratio a linear map with that Jacobian would score",
                   "worst_kernel_share": "||kernel part of f(y + e) - f(y)|| / ||f(y + e) - f(y)|| "
                                         "(mrijax.hallucination.error_split)",
                   "psnr_change": common.PSNR_CHANGE_DEFINITION,
                   "foreign_psnr_change": "PSNR change under the --perturbations snapshots, one per snapshot "
                                        "(mean over images)",
                   "foreign_noise_psnr_change": "PSNR change under Gaussian noise on the sampled k-space entries "
                                              "with the same ||A r|| as each snapshot"}}
    common.save_npz(os.path.join(fv.out_dir, "arrays.npz"), **arrays)
    common.save_json(os.path.join(fv.out_dir, "results.json"), results)
    _figure(fv, settings, measured, rows, images)
    print("done: " + "; ".join(f"{i}: {e['setting']} {e['gain_over_zero_filled_db']:+.2f} dB, ratio "
                               f"{e['ratio_worst_to_noise']:.2f}" for i, e in enumerate(rows))
          + f".  Files in {fv.out_dir}", flush=True)
    return results


def main(argv=None):
    return common.main(define_flags, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
