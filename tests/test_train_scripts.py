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


# ----------------------------------------------------------------------------- crashes


CASCADE = ["train.py", "--model=cascade", *TINY, "--n_cascades=1", "--n_convs=2", "--features=4",
           "--images=ellipses", "--mask_mode=per_image"]


def _check_finished(out, steps, logged):
    assert checkpoint.read_meta(out, "latest")["step"] == steps
    assert [r["step"] for r in _history(out) if "loss" in r] == logged
    assert (out / "reconstructions.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in out.iterdir() if ".tmp" in p.name or p.name.endswith(".old")]


def _history(out):
    with open(out / "metrics.json") as f:
        return [{k: v for k, v in r.items() if k != "steps_per_s"} for r in json.load(f)["history"]]


def test_resume_after_a_crash_between_the_renames_of_a_save(tmp_path, capsys):
    import shutil
    first = tmp_path / "first"
    assert script.main(CASCADE + [f"--out_dir={first}", "--steps=2"]) == 0
    # A crash inside checkpoint.save between its two renames leaves latest.old (and best) ...
    with_best, alone = tmp_path / "with_best", tmp_path / "alone"
    for out in (with_best, alone):
        shutil.copytree(first, out)
        (out / "latest").rename(out / "latest.old")
    shutil.rmtree(alone / "best")                               # ... or latest.old alone
    capsys.readouterr()
    for out in (with_best, alone):
        assert script.main(CASCADE + [f"--out_dir={out}", "--steps=4", "--resume"]) == 0, out
        printed = capsys.readouterr().out
        assert f"resumed {out} at step 2 (from latest.old)" in printed      # not a new run from step 1
        assert "step      1/4" not in printed
        check_outputs(out, 4)
        assert _history(out)[:3] == _history(first)[:3]                     # steps 1, 2 and validation 2
    # Without --resume, latest.old is a checkpoint not to overwrite either.
    crashed = tmp_path / "crashed"
    shutil.copytree(first, crashed)
    shutil.rmtree(crashed / "best")
    (crashed / "latest").rename(crashed / "latest.old")
    assert script.main(CASCADE + [f"--out_dir={crashed}", "--steps=4"]) == 2
    assert "already holds a checkpoint" in capsys.readouterr().err


def test_a_kill_before_metrics_json_loses_no_history_and_stale_temporaries_go(tmp_path, monkeypatch, capsys):
    import os
    flags = CASCADE + ["--steps=6", "--log_every=2", "--ckpt_every=3", "--validate_every=4"]
    whole = tmp_path / "whole"
    assert script.main(flags + [f"--out_dir={whole}"]) == 0

    # Killed after the step-3 checkpoint, before metrics.json was (re)written.
    cut = tmp_path / "cut"
    real = checkpoint.write_json_atomic

    def killed(path, obj, strict=False):
        if os.path.basename(path) == "metrics.json":
            raise KeyboardInterrupt
        real(path, obj, strict)
    monkeypatch.setattr(checkpoint, "write_json_atomic", killed)
    assert script.main(flags + [f"--out_dir={cut}"]) == 130
    monkeypatch.setattr(checkpoint, "write_json_atomic", real)
    assert checkpoint.read_meta(cut, "latest")["step"] == 3 and not (cut / "metrics.json").exists()
    # What a kill inside a write leaves (older than this process): removed on resume.
    stale = [cut / f".latest.tmp-{'c' * 32}", cut / ".metrics.json.ab12cd34.tmp",
             cut / ".reconstructions.png.ab12cd34.tmp", cut / "reconstructions.png.tmp-4242.png"]
    stale[0].mkdir()
    for p in stale[1:]:
        p.write_bytes(b"half")
    for p in stale:
        os.utime(p, (checkpoint._STARTED - 60,) * 2)  # before this process started
    capsys.readouterr()
    assert script.main(flags + [f"--out_dir={cut}", "--resume"]) == 0
    assert f"resumed {cut} at step 3" in capsys.readouterr().out
    _check_finished(cut, 6, [2, 4, 6])
    assert not any(p.exists() for p in stale)
    assert _history(cut) == _history(whole)                  # the records of an uninterrupted run

    # Resuming the finished run changes neither its history nor its checkpoint.
    meta = whole / "latest" / "meta.json"
    before = (os.stat(meta).st_ino, os.stat(meta).st_mtime_ns)
    assert script.main(flags + [f"--out_dir={whole}", "--resume"]) == 0
    assert (os.stat(meta).st_ino, os.stat(meta).st_mtime_ns) == before
    assert _history(whole) == _history(cut)
    _check_finished(whole, 6, [2, 4, 6])
