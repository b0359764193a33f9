"""End-to-end runs of experiments/train.py (every trained model of the registry) with tiny flags."""

import json

from experiments import train as script
from mrijax import checkpoint, models
from mrijax.models import Automap, Cascade


TINY = ["--size=16", "--batch_size=2", "--log_every=1", "--ckpt_every=2", "--validate_every=2",
        "--val_count=2", "--plot_count=2", "--mask=gaussian_lines", "--acceleration=3", "--sample_n=2"]


def check_outputs(out, steps):
    assert (out / "latest").is_dir() and (out / "best").is_dir()
    png = (out / "reconstructions.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    with open(out / "metrics.json") as f:
        record = json.load(f)
    logged = [r["step"] for r in record["history"] if "loss" in r]
    assert logged == list(range(1, steps + 1))
    final = record["final_validation"]
    assert {"psnr_zf", "psnr_net", "ssim_zf", "ssim_net"} <= set(final)
    assert checkpoint.read_meta(out, "latest")["step"] == steps
    assert not [p for p in out.iterdir() if ".tmp" in p.name or p.name.endswith(".old")]


def test_train_cascade_end_to_end_and_resume(tmp_path, capsys):
    out = tmp_path / "cascade"
    args = ["train.py", "--model=cascade", f"--out_dir={out}", *TINY, "--n_cascades=1", "--n_convs=2", "--features=4",
            "--images=ellipses:2,shepp_logan:1", "--mask_mode=per_image"]
    assert script.main(args + ["--steps=3"]) == 0
    check_outputs(out, 3)
    model, params, config = models.load(out)
    assert isinstance(model, Cascade) and model.features == 4
    assert config["data"]["images"] == "ellipses:2,shepp_logan:1" and config["mask"]["kind"] == "gaussian_lines"

    assert script.main(args + ["--steps=3"]) == 2  # never overwrite a run silently
    assert str(out) in capsys.readouterr().err
    assert script.main(args + ["--steps=4", "--resume", "--lr=0.5"]) == 2
    assert "train.lr: stored None, requested 0.5" in capsys.readouterr().err
    assert script.main(args + ["--steps=4", "--resume"]) == 0  # a longer run continues
    check_outputs(out, 4)


def test_train_automap_end_to_end(tmp_path):
    out = tmp_path / "automap"
    args = ["train.py", "--model=automap", f"--out_dir={out}", *TINY, "--hidden=8", "--conv_features=4", "--steps=2",
            "--images=ellipses"]
    assert script.main(args) == 0
    check_outputs(out, 2)
    model, params, config = models.load(out)
    mask = checkpoint.load_arrays(out)["mask"]
    assert isinstance(model, Automap)
    assert model.n == 16 and model.m == int(mask.sum()) and mask.shape == (16, 16)
    assert config["train"]["activation_penalty"] == 1e-4 and config["train"]["loss"] == "magnitude_l2"


def test_the_script_rejects_bad_flags_in_one_line(tmp_path, capsys):
    assert script.main(["train.py", "--size=16", f"--out_dir={tmp_path}/a"]) == 2            # no --model
    assert "--model is required" in capsys.readouterr().err
    assert script.main(["train.py", "--model=cascade", "--size=16"]) == 2                    # no --out_dir
    assert script.main(["train.py", "--model=cascade", "--out_dir=x", "--no_such_flag=1"]) == 2
    assert script.main(["train.py", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--acceleration" in out and "--n_cascades" in out and "--hidden" in out
    # A model's flags belong to that model; AUTOMAP needs its one fixed mask.
    assert script.main(["train.py", "--model=cascade", f"--out_dir={tmp_path}/b", "--hidden=8"]) == 2
    assert "--hidden is not a flag of --model=cascade" in capsys.readouterr().err
    assert script.main(["train.py", "--model=automap", f"--out_dir={tmp_path}/c", "--mask_mode=per_image"]) == 2
    assert "tied to one mask" in capsys.readouterr().err
    # An --out_dir that is a file is refused before any training.
    (tmp_path / "file").write_text("x")
    assert script.main(["train.py", "--model=cascade", f"--out_dir={tmp_path}/file"]) == 2
    assert "is not a folder" in capsys.readouterr().err
