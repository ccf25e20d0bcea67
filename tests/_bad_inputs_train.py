"""Bad inputs to ``stpred-train`` and ``stpred-eval``: config values, devices, folders, checkpoints.

``tests/_bad_inputs.py`` says how each is run and judged. Every error comes before data is read or generated.
"""

from __future__ import annotations

import os
from pathlib import Path

from _bad_inputs import Script, cut_checkpoint, damaged_checkpoint

#: A run folder inside the case's folder: a failed start must not leave it behind.
RUN = "hydra.run.dir={tmp}/run"
#: The quickstart preset with its data generated under the case's folder (never reached by a failing case).
QUICK = ("experiment=quickstart", "data.root={tmp}/ns", RUN)


def _file(name: str, text: str = "not a folder\n"):
    def prepare(tmp: Path) -> None:
        (tmp / name).write_text(text)

    return prepare


def _random_bytes(tmp: Path) -> None:
    (tmp / "random.ckpt").write_bytes(os.urandom(4096))


def _text_checkpoint(tmp: Path) -> None:
    (tmp / "notes.ckpt").write_text("this is a text file, not a checkpoint\n")


def _damaged(tmp: Path) -> None:
    damaged_checkpoint(tmp)


def _cut(tmp: Path) -> None:
    cut_checkpoint(tmp)


def _train(case_id: str, *args: str, expect: str, prepare=None, env=(), quick: bool = True) -> Script:
    argv = ("stpred-train", *(QUICK if quick else (RUN,)), *args)
    return Script(case_id, argv, expect, prepare, env)


def _eval(case_id: str, *args: str, expect: str, prepare=None) -> Script:
    return Script(case_id, ("stpred-eval", RUN, *args), expect, prepare)


CASES = [
    # -- values of the data, trainer and optimiser keys -------------------------------------------------------------
    _train("train-batch-size-0", "data.batch_size=0", expect="data.batch_size=0 is not allowed"),
    _train("train-batch-size-negative", "data.batch_size=-1", expect="data.batch_size=-1 is not allowed"),
    _train("train-batch-size-text", "data.batch_size=many", expect="data.batch_size='many'"),
    _train("train-eval-batch-size-0", "+data.eval_batch_size=0", expect="data.eval_batch_size=0"),
    _train("train-num-workers-negative", "data.num_workers=-2", expect="data.num_workers=-2"),
    _train("train-max-epochs-negative", "trainer.max_epochs=-5", expect="trainer.max_epochs=-5 is not allowed"),
    _train("train-max-epochs-0", "trainer.max_epochs=0", expect="an integer >= 1 (or -1 for no limit)"),
    _train("train-max-epochs-float", "trainer.max_epochs=2.5", expect="trainer.max_epochs=2.5"),
    _train("train-min-epochs-negative", "trainer.min_epochs=-1", expect="trainer.min_epochs=-1"),
    _train("train-lr-negative", "optim.lr=-1", expect="optim.lr=-1 is not allowed: optim.lr must be a number > 0"),
    _train("train-lr-0", "optim.lr=0", expect="optim.lr=0 is not allowed"),
    _train("train-lr-text", "optim.lr=fast", expect="optim.lr='fast'"),
    _train("train-lr-nan", "optim.lr=nan", expect="optim.lr=nan"),
    _train("train-weight-decay-negative", "optim.weight_decay=-0.1", expect="optim.weight_decay=-0.1"),
    _train("train-betas-above-1", "optim.betas=[0.9,1.5]", expect="optim.betas=[0.9, 1.5]"),
    _train("train-betas-one-value", "optim.betas=[0.9]", expect="two numbers in [0, 1)"),
    _train("train-pct-start-above-1", "optim.pct_start=1.5", expect="optim.pct_start=1.5"),
    _train("train-optimizer-unknown", "optim.optimizer=lbfgs", expect="one of adam, adamw, sgd"),
    _train("train-scheduler-unknown", "optim.scheduler=sometimes", expect="optim.scheduler='sometimes'"),
    _train("train-warmup-epochs-negative", "optim.warmup_epochs=-1", expect="optim.warmup_epochs=-1"),
    _train("train-optim-key-unknown", "+optim.momentun=0.9", expect="optim.momentun"),
    _train("train-seed-negative", "seed=-3", expect="seed=-3"),
    _train("train-seed-text", "seed=lucky", expect="seed='lucky'"),
    _train("train-compile-text", "compile=maybe", expect="compile='maybe'"),
    _train("train-loss-unknown", "loss=huber2", expect="loss='huber2'"),
    _train("train-nothing-to-do", "train=false", "test=false", expect="leaves nothing to do"),
    _train("train-limit-batches-above-1", "trainer.limit_train_batches=1.5", expect="trainer.limit_train_batches=1.5"),
    _train("train-gradient-clip-negative", "trainer.gradient_clip_val=-1", expect="trainer.gradient_clip_val=-1"),
    _train("train-log-every-0", "trainer.log_every_n_steps=0", expect="trainer.log_every_n_steps=0"),
    _train("train-check-val-0", "trainer.check_val_every_n_epoch=0", expect="trainer.check_val_every_n_epoch=0"),
    _train("train-precision-unknown", "trainer.precision=8-bit", expect="trainer.precision='8-bit'"),
    # -- devices ----------------------------------------------------------------------------------------------------
    _train("train-gpu-without-gpu", "trainer=gpu", expect="asks for a CUDA GPU, but none is visible"),
    _train("train-accelerator-cuda", "trainer.accelerator=cuda", expect="asks for a CUDA GPU"),
    _train("train-accelerator-tpu", "trainer.accelerator=tpu", expect="trainer.accelerator=tpu"),
    _train("train-accelerator-unknown", "trainer.accelerator=npu", expect="trainer.accelerator='npu'"),
    _train("train-devices-0", "trainer.devices=0", expect="trainer.devices=0"),
    _train("train-ddp-without-gpu", "trainer=ddp", expect="asks for a CUDA GPU"),
    # -- names: models, their keywords, datasets, config groups -----------------------------------------------------
    _train("train-model-unknown", "model=nope", expect="unknown model 'nope'"),
    _train("train-model-keyword-typo", "+model.kwargs.widht=8", expect="model 'fno2d' takes no model.kwargs.widht"),
    _train("train-model-keyword-other-model", "model=predformer", "model.kwargs.modes=8",
           expect="takes no model.kwargs.modes"),  # fmt: skip
    _train("train-data-key-unknown", "+data.n_trian=5", expect="takes no data.n_trian"),
    _train("train-data-unknown", "data=nope", expect="unknown data 'nope'", quick=False),
    _train("train-experiment-unknown", "experiment=nope", expect="unknown experiment 'nope'", quick=False),
    _train("train-trainer-key-typo", "trainer.max_epoch=3", expect="unknown config key trainer.max_epoch"),
    _train("train-debug-unknown", "debug=slow", expect="unknown debug 'slow'"),
    _train("train-override-syntax", "optim.lr=[", expect="cannot read the override 'optim.lr=['"),
    # -- folders ----------------------------------------------------------------------------------------------------
    Script("train-run-dir-under-file", ("stpred-train", "experiment=quickstart", "hydra.run.dir={tmp}/file.txt/run"),
           "file.txt", _file("file.txt")),  # fmt: skip
    Script("train-run-dir-unwritable", ("stpred-train", "experiment=quickstart", "hydra.run.dir=/proc/sys/stpred/run"),
           "/proc/sys is not writable"),  # fmt: skip
    Script("train-run-dir-is-file", ("stpred-train", "experiment=quickstart", "hydra.run.dir={tmp}/file.txt"),
           "file.txt", _file("file.txt")),  # fmt: skip
    _train("train-data-dir-under-file", expect="(STPRED_DATA) lies under", prepare=_file("file.txt"),
           env=(("STPRED_DATA", "{tmp}/file.txt/data"),), quick=False),  # fmt: skip
    Script("train-root-dir-under-file", ("stpred-train", "experiment=quickstart"), "cannot create a folder under",
           _file("file.txt"),
           env=(("STPRED_ROOT", "{tmp}/file.txt"),)),  # fmt: skip
    # -- checkpoints to resume --------------------------------------------------------------------------------------
    _train("train-resume-missing", "ckpt_path={tmp}/missing.ckpt", expect="checkpoint not found"),
    _train("train-resume-random-bytes", "ckpt_path={tmp}/random.ckpt", expect="random.ckpt", prepare=_random_bytes),
    _train("train-resume-text", "ckpt_path={tmp}/notes.ckpt", expect="notes.ckpt", prepare=_text_checkpoint),
    _train("train-resume-damaged", "ckpt_path={tmp}/damaged.ckpt", expect="fails its CRC-32 check", prepare=_damaged),
    _train("train-resume-cut", "ckpt_path={tmp}/cut.ckpt", expect="cut.ckpt", prepare=_cut),
    _train("train-resume-other-model", "ckpt_path=zoo:mmnist-simvpv2", expect="holds model 'simvpv2'"),
    _train("train-resume-other-width", "ckpt_path=zoo:ns-fno2d", "model.kwargs.width=32",
           expect="width 20 -> 32"),  # fmt: skip
    _train("train-resume-other-grid", "ckpt_path=zoo:ns-fno2d", "data.resolution=16",
           expect="was trained on in_shape=[10, 1, 32, 32]"),  # fmt: skip
    _train("train-resume-other-horizon", "ckpt_path=zoo:ns-fno2d", "data.t_out=5", expect="out_frames=10"),
    # -- stpred-eval ------------------------------------------------------------------------------------------------
    _eval("eval-no-checkpoint", expect="ckpt_path"),
    _eval("eval-missing", "ckpt_path={tmp}/missing.ckpt", expect="checkpoint not found"),
    _eval("eval-random-bytes", "ckpt_path={tmp}/random.ckpt", expect="random.ckpt", prepare=_random_bytes),
    _eval("eval-text", "ckpt_path={tmp}/notes.ckpt", expect="notes.ckpt", prepare=_text_checkpoint),
    _eval("eval-damaged", "ckpt_path={tmp}/damaged.ckpt", expect="fails its CRC-32 check", prepare=_damaged),
    _eval("eval-cut", "ckpt_path={tmp}/cut.ckpt", expect="cut.ckpt", prepare=_cut),
    _eval("eval-run-dir-unwritable", "ckpt_path=zoo:ns-fno2d", "hydra.run.dir=/proc/sys/stpred/run",
          expect="/proc/sys is not writable"),  # fmt: skip
    _eval("eval-data-unknown", "ckpt_path=zoo:ns-fno2d", "data=nope", expect="unknown data 'nope'"),
    _eval("eval-data-other-grid", "ckpt_path=zoo:ns-fno2d", "data=navier_stokes", "data.root={tmp}/ns",
          expect="was trained on in_shape=[10, 1, 32, 32]"),  # fmt: skip
    _eval("eval-data-other-dataset", "ckpt_path=zoo:ns-fno2d", "data=mmnist", expect="in_shape=[10, 1, 64, 64]"),
    _eval("eval-gpu-without-gpu", "ckpt_path=zoo:ns-fno2d", "trainer=gpu", expect="asks for a CUDA GPU"),
    _eval("eval-devices-0", "ckpt_path=zoo:ns-fno2d", "trainer.devices=0", expect="trainer.devices=0"),
    _eval("eval-trainer-key-typo", "ckpt_path=zoo:ns-fno2d", "trainer.max_epoch=3", expect="trainer.max_epoch"),
    Script("eval-run-dir-under-file", ("stpred-eval", "ckpt_path=zoo:ns-fno2d", "hydra.run.dir={tmp}/file.txt/run"),
           "file.txt", _file("file.txt")),  # fmt: skip
]
