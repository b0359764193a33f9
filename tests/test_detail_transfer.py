"""experiments/detail_transfer.py end to end with tiny flags; its numbers against direct library calls."""

import json

import numpy as np
import pytest

from experiments import common
from experiments import detail_transfer as dt
from mrijax import fourier, masks, metrics
from mrijax import hallucination as hal
from mrijax.data import phantoms

TINY = ["--size=32", "--hidden=32", "--conv_features=8", "--chunk=100"]


def _ellipse():
    # The default detail flags.
    return phantoms.ellipse(32, (0.3, -0.35), (0.1, 0.08), 0.0, 0.3)


def _mask():
    return masks.for_acceleration("exact_count_lines", (32, 32), 4.0, 0)


def _load(out):
    with open(out / "results.json") as f:
        return json.load(f), common.load_npz(str(out / "arrays.npz"))


def test_single_pair_in_the_kernel_transfers_the_detail_and_resumes(tmp_path, capsys):
    out = tmp_path / "single"
    argv = ["prog", f"--out_dir={out}", "--detail_in_kernel", "--steps=400", "--min_loss=0.01", *TINY]
    assert dt.main(argv) == 0
    printed = capsys.readouterr().out
    assert "||A x_det||_2 = " in printed and "||A x_det|| / ||x_det|| = " in printed
    for name in ("detail_transfer.png", "detail_maps.png", "results.json", "arrays.npz", "fit_state.npz",
                 "run_config.json"):
        assert (out / name).is_file(), name
    res, a = _load(out)
    mask, x1 = _mask(), a["x1"]
    np.testing.assert_array_equal(a["mask"], mask)
    np.testing.assert_allclose(x1, phantoms.shepp_logan(32), atol=1e-6)
    d = a["details"][0]
    # The detail is the real-kernel projection of the drawn ellipse, and A does not see it.
    np.testing.assert_allclose(d, np.asarray(hal.detail_in_kernel(_ellipse(), mask, real=True)), atol=1e-6)
    net = res["networks"][0]
    a_norm = float(np.linalg.norm(np.asarray(fourier.forward(d, mask))))
    assert res["A_detail_norm"] == pytest.approx(a_norm, rel=1e-4, abs=1e-9)
    assert res["visibility"] == pytest.approx(a_norm / np.linalg.norm(d), rel=1e-4, abs=1e-9)
    assert res["visibility"] <= 1e-3
    # The acceptance number: at least 80% of the detail lands in f(A x1).
    frac = float(hal.transferred_fraction(a["recon_x1"][0], x1, d))
    assert res["transferred_fraction"] == pytest.approx(frac, rel=1e-5)
    assert frac >= 0.8
    assert net["transferred_fraction_noisy"] == pytest.approx(
        float(hal.transferred_fraction(a["recon_noisy"][0], x1, d)), rel=1e-5)
    assert net["psnr_detail"] == pytest.approx(float(metrics.psnr(a["recon_detail"][0], x1 + d)), rel=1e-5)
    assert net["psnr_x1"] == pytest.approx(float(metrics.psnr(a["recon_x1"][0], x1)), rel=1e-5)
    assert net["psnr_noisy"] == pytest.approx(float(metrics.psnr(a["recon_noisy"][0], x1)), rel=1e-5)
    assert net["final_loss"] == pytest.approx(float(np.sum((a["recon_detail"][0] - (x1 + d)) ** 2)), rel=1e-3)
    assert net["final_loss"] <= 0.01 and 0 < net["stopped_at"] == net["steps"] <= 400
    # The noise has the requested norm and lives on the mask.
    assert float(np.linalg.norm(a["noise"])) == pytest.approx(
        0.02 * float(np.linalg.norm(np.asarray(fourier.forward(x1, mask)))), rel=1e-4)
    assert np.all(a["noise"][:, ~mask[0]] == 0)
    split = hal.error_split(a["recon_x1"][0], x1, mask, real=True)
    assert net["error_kernel_norm"] == pytest.approx(float(split["kernel_norm"]), rel=1e-4)
    assert net["error_range_norm"] == pytest.approx(float(split["range_norm"]), rel=1e-4)
    # One loss per iteration run (a frozen network's stays constant until the chunk ends).
    assert a["loss_history"].shape == (res["iterations"], 1) and res["iterations"] >= net["steps"]
    np.testing.assert_allclose(a["loss_history"][net["steps"]:, 0], a["loss_history"][net["steps"], 0])

    # The same folder again: refused without --resume; with it nothing is retrained.
    assert dt.main(argv) == 2
    assert dt.main(argv + ["--resume"]) == 0
    res2, a2 = _load(out)
    assert res2["transferred_fraction"] == pytest.approx(res["transferred_fraction"], rel=1e-6)
    assert a2["loss_history"].shape == a["loss_history"].shape
    # A resume with other numeric flags is refused.
    capsys.readouterr()
    assert dt.main(["prog", f"--out_dir={out}", "--detail_in_kernel", "--steps=401", "--min_loss=0.01", "--resume",
                    *TINY]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "--steps stored 400, requested 401" in err


def test_pairs_give_details_of_the_requested_visibility(tmp_path):
    out = tmp_path / "pair"
    vis = [0.0, 0.1, 0.3]
    assert dt.main(["prog", f"--out_dir={out}", "--pair", "--visibilities=0,0.1,0.3", "--steps=20",
                    *TINY]) == 0
    for name in ("accuracy_stability.png", "pair_reconstructions.png", "results.json", "arrays.npz"):
        assert (out / name).is_file(), name
    res, a = _load(out)
    mask, x1 = _mask(), a["x1"]
    assert res["mode"] == "pair" and len(res["networks"]) == 3
    d = a["details"]
    np.testing.assert_allclose(np.asarray(hal.visibility(d, mask)), vis, atol=2e-5)
    np.testing.assert_allclose(np.linalg.norm(d, axis=(-2, -1)), np.linalg.norm(_ellipse()), rtol=1e-5)
    np.testing.assert_allclose(d[0], np.asarray(hal.detail_with_visibility(_ellipse(), mask, 0.0, real=True)),
                               atol=1e-5)
    # Each network trained on (A x1, x1) and (A(x1 + d_v), x1 + d_v).
    np.testing.assert_allclose(a["targets"][:, 0], np.broadcast_to(x1, d.shape), atol=1e-7)
    np.testing.assert_allclose(a["targets"][:, 1], x1 + d, atol=1e-6)
    for i, (e, v) in enumerate(zip(res["networks"], vis)):
        assert e["target_visibility"] == v
        a_norm = float(np.linalg.norm(np.asarray(fourier.forward(d[i], mask))))
        assert e["A_detail_norm"] == pytest.approx(a_norm, rel=1e-4, abs=1e-7)
        if v > 0:
            assert e["gain_needed"] == pytest.approx(1 / v)
            gain = np.linalg.norm(a["recon_detail"][i] - a["recon_x1"][i]) / a_norm
            assert e["local_gain"] == pytest.approx(float(gain), rel=1e-4)
        else:
            assert e["gain_needed"] == "inf"
        assert e["transferred_fraction"] == pytest.approx(
            float(hal.transferred_fraction(a["recon_x1"][i], x1, d[i])), rel=1e-4, abs=1e-6)
        assert e["psnr_detail"] == pytest.approx(float(metrics.psnr(a["recon_detail"][i], x1 + d[i])), rel=1e-5)
        expected_loss = 0.5 * (np.sum((a["recon_x1"][i] - x1) ** 2) + np.sum((a["recon_detail"][i] - x1 - d[i]) ** 2))
        assert e["final_loss"] == pytest.approx(float(expected_loss), rel=1e-3)
        assert e["steps"] == 20
    assert a["loss_history"].shape == (20, 3)


@pytest.mark.parametrize("extra", [
    ["--pair", "--detail_in_kernel"],
    ["--pair", "--visibilities=0.5,1.2"],
    ["--pair", "--visibilities=0.95"],           # beyond the largest reachable (about 0.83 at 32x32)
    ["--pair", "--visibilities="],
    ["--detail_center=0.1"],
    ["--detail_axes=0.1,-0.2"],
    ["--detail_center=5,5"],                     # the ellipse misses the image
    ["--detail_file=/nonexistent/detail.npy"],
    ["--lr=0"],
    ["--lr=-1"],
    ["--images=no_such_image_source"],
])
def test_bad_flags_fail_before_any_work(tmp_path, capsys, extra):
    out = tmp_path / "bad"
    assert dt.main(["prog", f"--out_dir={out}", *TINY, *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1        # one line, no traceback
    assert not out.exists()


def test_detail_file_must_fit(tmp_path):
    path = tmp_path / "detail.npy"
    np.save(path, np.ones((16, 16), np.float32))
    assert dt.main(["prog", f"--out_dir={tmp_path / 'o'}", f"--detail_file={path}", *TINY]) == 2
    assert dt.main(["prog", f"--out_dir={tmp_path / 'o'}", "--size=abc"]) == 2
