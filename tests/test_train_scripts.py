"""End-to-end runs of experiments/train_cascade.py and experiments/train_automap.py with tiny flags."""

import importlib.util
import json
import pathlib

import pytest

from mrijax import checkpoint
from mrijax.models import Automap, Cascade

EXPERIMENTS = pathlib.Path(__file__).resolve().parents[1] / "experiments"


def load_script(name):
    spec = importlib.util.spec_from_file_location(f"_test_{name}", EXPERIMENTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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


def test_train_cascade_end_to_end_and_resume(tmp_path):
    script = load_script("train_cascade")
    out = tmp_path / "cascade"
    args = ["train_cascade.py", f"--ckpt_dir={out}", *TINY, "--n_cascades=1", "--n_convs=2", "--features=4",
            "--images=ellipses:2,shepp_logan:1", "--mask_mode=per_image"]
    assert script.main(args + ["--steps=3"]) == 0
    check_outputs(out, 3)
    model, params, config = checkpoint.load_model(out)
    assert isinstance(model, Cascade) and model.features == 4
    assert config["data"]["images"] == "ellipses:2,shepp_logan:1" and config["mask"]["kind"] == "gaussian_lines"

    with pytest.raises(FileExistsError, match=str(out)):
        script.main(args + ["--steps=3"])  # never overwrite a run silently
    with pytest.raises(checkpoint.ConfigMismatchError, match="train.lr"):
        script.main(args + ["--steps=4", "--resume", "--lr=0.5"])
    assert script.main(args + ["--steps=4", "--resume"]) == 0  # a longer run continues
    check_outputs(out, 4)


def test_train_automap_end_to_end(tmp_path):
    script = load_script("train_automap")
    out = tmp_path / "automap"
    args = ["train_automap.py", f"--ckpt_dir={out}", *TINY, "--hidden=8", "--conv_features=4", "--steps=2",
            "--images=ellipses"]
    assert script.main(args) == 0
    check_outputs(out, 2)
    model, params, config = checkpoint.load_model(out)
    mask = checkpoint.load_arrays(out)["mask"]
    assert isinstance(model, Automap)
    assert model.n == 16 and model.m == int(mask.sum()) and mask.shape == (16, 16)
    assert config["train"]["activation_penalty"] == 1e-4 and config["train"]["loss"] == "magnitude_l2"


def test_scripts_reject_bad_flags(tmp_path, capsys):
    cascade = load_script("train_cascade")
    assert cascade.main(["train_cascade.py", "--size=16"]) == 2            # no --ckpt_dir
    assert cascade.main(["train_cascade.py", "--ckpt_dir=x", "--no_such_flag=1"]) == 2
    assert cascade.main(["train_cascade.py", "--help"]) == 0
    assert "--acceleration" in capsys.readouterr().out
    automap = load_script("train_automap")
    assert automap.main(["train_automap.py", f"--ckpt_dir={tmp_path}", "--mask_mode=per_image"]) == 2
