"""Console scripts: a user's mistake ends with one clear line on stderr and exit code 2."""

from __future__ import annotations

import pytest
from _helpers import run_module


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["model=nope"], "unknown model 'nope'"),
        (["trainer.max_epoch=3"], "unknown config key trainer.max_epoch"),
        (["experiment=nope"], "unknown experiment 'nope'"),
        (["optim.scheduler=sometimes", "debug=fdr"], "optim.scheduler='sometimes'"),
    ],
)
def test_train_config_mistakes_are_one_line_and_exit_2(tmp_path, args, needle):
    small = ["data.n_train=8", "data.n_val=4", "data.n_test=4", "data.resolution=16", "model.kwargs.modes=4"]
    proc = run_module(
        "stpred.apps.train", *args, *small, f"data.root={tmp_path}", f"hydra.run.dir={tmp_path}/run", cwd=tmp_path
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1, proc.stderr
    assert needle in errors[0] and errors[0].startswith("stpred-train: error:")
    assert proc.stderr.rstrip().endswith(errors[0])
    assert "Traceback" not in proc.stderr


def test_unknown_registry_name_is_one_clear_error():
    import stpred

    with pytest.raises(stpred.UserError) as info:
        stpred.create_model("simvp_v3", in_shape=(10, 1, 64, 64), out_frames=10)
    message = str(info.value)
    assert "unknown model 'simvp_v3'" in message and "simvpv2" in message and "\n" not in message


def test_eval_missing_checkpoint_is_one_line(tmp_path):
    proc = run_module("stpred.apps.evaluate", f"ckpt_path={tmp_path / 'missing.ckpt'}", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"stpred-eval: error: checkpoint not found: {tmp_path / 'missing.ckpt'} "
        "(pass the path of a .ckpt written by stpred-train)"
    ]


def test_eval_changes_one_key_of_the_saved_data_config(tmp_path):
    """`+data.n_test=4`: the checkpoint's own data config with a smaller test split (checked shapes, then tested)."""
    proc = run_module(
        "stpred.apps.evaluate",
        "ckpt_path=zoo:ns-fno2d",
        "+data.n_test=4",
        f"+data.root={tmp_path / 'ns'}",
        "+data.progress=false",
        "trainer.enable_progress_bar=false",
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "rel_l2=" in proc.stdout
    assert "ns_r32_s32_nu0.001_n184" in " ".join(p.name for p in (tmp_path / "ns").iterdir())
