"""experiments/structural_change.py end to end: files, and its numbers equal direct library calls."""

import json

import numpy as np
import pytest

from experiments import common, structural_change
from mrijax import fourier, hallucination, masks, metrics
from mrijax.data import symbols
from mrijax.data.images import load_images

TINY = ["--size=32", "--images=ellipses", "--cs_iters=5", "--symbols=heart:0.3:0.3:0.2,diamond:0.3:0.7:0.2",
        "--text=IT", "--text_center=0.7,0.5", "--text_height=0.15", "--intensity=0.5"]


def _run(out_dir, *extra):
    return structural_change.main(["structural_change", f"--out_dir={out_dir}", *TINY, *extra])


def test_writes_its_files_and_numbers_equal_library_calls(tmp_path):
    out = tmp_path / "run"
    assert _run(out) == 0
    for name in ("structural_change.png", "symbols_zoom.png", "results.json", "arrays.npz"):
        assert (out / name).is_file(), name
    res = json.loads((out / "results.json").read_text())
    arr = common.load_npz(str(out / "arrays.npz"))

    # The detail is exactly what mrijax.data.symbols draws.
    items = [symbols.Symbol("heart", (0.3, 0.3), 0.2, 0.5), symbols.Symbol("diamond", (0.3, 0.7), 0.2, 0.5),
             symbols.Symbol("IT", (0.7, 0.5), 0.15, 0.5)]
    r, sym_masks = symbols.render((32, 32), items)
    np.testing.assert_array_equal(arr["r"], r)
    np.testing.assert_array_equal(arr["symbol_masks"], sym_masks)
    x = np.abs(load_images("ellipses", 32, count=1, seed=0)[0])
    np.testing.assert_allclose(arr["x_with_symbols"], x + r, atol=1e-6)

    # Reconstructions and numbers, recomputed.
    mask = masks.for_acceleration("gaussian_lines", (32, 32), 3.0, 0, sample_n=8)
    np.testing.assert_array_equal(arr["mask"], mask)
    recon, _ = common.load_reconstruction(common.DEFAULT_CHECKPOINT, mask)
    net = np.asarray(recon(fourier.forward(x + r, mask)))  # eager: no second compilation
    np.testing.assert_allclose(arr["network_with_symbols"], net, atol=2e-4)
    net_m = res["methods"]["network"]["with_symbols"]
    assert net_m["psnr"] == pytest.approx(float(metrics.psnr(np.abs(net), x + r)), abs=1e-2)
    zf = fourier.adjoint(fourier.forward(x + r, mask), mask)
    zf_m = res["methods"]["zero_filled"]["with_symbols"]
    assert zf_m["ssim"] == pytest.approx(float(metrics.ssim(np.abs(zf), x + r)), abs=1e-4)
    for j, s in enumerate(res["symbols"]):
        box = symbols.bounding_box(sym_masks[j], pad=1, min_size=7)
        assert s["box"] == list(box)
        region = np.zeros((32, 32), bool)
        region[box[0]:box[1], box[2]:box[3]] = True
        assert s["network_psnr_box"] == pytest.approx(float(symbols.region_psnr(net, x + r, region)), abs=1e-2)
        assert s["zero_filled_ssim_box"] == pytest.approx(float(symbols.region_ssim(zf, x + r, box)), abs=1e-4)
        # Zero filling is linear: it "recovers" <A*A r, r_s> / ||r_s||^2 = Re <A r, A r_s> / ||r_s||^2.
        r_s = np.where(sym_masks[j], r, 0.0)
        a_rs, a_r = fourier.forward(r_s, mask), fourier.forward(r, mask)
        measured = float(np.sum(np.real(np.conj(a_rs) * a_r)) / np.sum(r_s ** 2))
        assert s["zero_filled_recovered"] == pytest.approx(measured, abs=1e-4)
        net_clean = arr["network_without_symbols"]
        assert s["network_recovered"] == pytest.approx(
            float(hallucination.transferred_fraction(net, net_clean, r_s)), abs=1e-3)
        # Without the symbols the reference is x (the same regions).
        assert s["network_psnr_box_without_symbols"] == pytest.approx(
            float(symbols.region_psnr(net_clean, x, region)), abs=1e-2)
    assert res["r_norm"] == pytest.approx(float(np.linalg.norm(r)), rel=1e-5)
    assert [s["label"] for s in res["symbols"]] == ["heart", "diamond", "text 'IT'"]


@pytest.mark.parametrize("extra, message", [
    (["--symbols=joker:0.5:0.5:0.1"], "unknown symbol"),
    (["--symbols=heart:0.5:0.5"], "name:row:col:height"),
    (["--symbols=heart:0.97:0.5:0.2"], "does not fit"),
    (["--text_center=0.5"], "--text_center"),
    (["--intensity=0"], "--intensity"),
    (["--model=/nonexistent/folder"], "checkpoint"),
    (["--model=deepmri_npz"], "--weights"),
])
def test_bad_flags_fail_fast_with_a_message(tmp_path, capsys, extra, message):
    assert _run(tmp_path / "bad", *extra) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
