"""Checkpoints for the stpred-serve tests: tiny untrained networks around metadata as the datamodules write it.

The video ones follow ``test_demo.py``'s (Kinetics-like RGB forecaster, LRCN classifier); the ERA5 one carries the
metadata of the real WeatherBench datamodule on the shared UK file; the array one is a small FNO on a ``[T, 1, 16, 16]``
vorticity-like field. Random BatchNorm statistics make the untrained outputs depend on the input.
"""

from __future__ import annotations

from pathlib import Path

import hydra
import torch
from _hydra import compose_config

import stpred
from stpred.datamodules.kinetics import IMAGENET_MEAN, IMAGENET_STD, read_label_map

LRCN_TINY = {"widths": (8, 16), "blocks": 1, "stem": "small", "hidden": 16, "feature_dim": 32}
SIMVP_TINY = {"hid_S": 8, "hid_T": 16, "N_S": 2, "N_T": 2, "mlp_ratio": 2.0}
FNO_TINY = {"modes": 4, "width": 8, "depth": 1}
ERA5_FILE = "weather/era5_t2m_2019-03_uk.nc"
CLIP = "video/kinetics_arm_wrestling.mp4"  # 280 frames, 256 x 340


def save_checkpoint(path: Path, name: str, kwargs: dict, metadata: dict) -> Path:
    torch.manual_seed(0)
    target = {"num_classes": metadata["num_classes"]} if metadata["task"] == "classify" else {}
    target = target or {"out_frames": metadata["out_frames"]}
    net = stpred.create_model(name, in_shape=tuple(metadata["in_shape"]), **target, **kwargs)
    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm2d | torch.nn.BatchNorm3d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 1.5)
    state = {"net." + k: v for k, v in net.state_dict().items()}
    hparams = {"model": {"name": name, "kwargs": kwargs}, "data": metadata}
    torch.save({"hyper_parameters": hparams, "state_dict": state}, path)
    return path


def clip_forecaster(folder: Path) -> Path:
    """RGB Kinetics-like forecaster: 4 context frames at stride 2, 32 x 32 crops, 3 frames out."""
    metadata = {
        "dataset": "kinetics400",
        "task": "forecast",
        "in_shape": [4, 3, 32, 32],
        "out_frames": 3,
        "channels": ["red", "green", "blue"],
        "units": ["1"] * 3,
        "mean": [0.0] * 3,
        "std": [1.0] * 3,
        "data_range": 1.0,
        "pde": False,
        "frame_stride": 2,
        "short_side": 40,
        "crop_size": [32, 32],
    }
    return save_checkpoint(folder / "clip_simvp.ckpt", "simvpv2", SIMVP_TINY, metadata)


def clip_classifier(folder: Path, data: Path) -> Path:
    """LRCN on 4 frames at stride 8, one view (1 clip x 1 crop), the 400 Kinetics labels."""
    metadata = {
        "dataset": "kinetics400",
        "task": "classify",
        "in_shape": [4, 3, 32, 32],
        "out_frames": None,
        "num_classes": 400,
        "class_names": read_label_map(data / "video/label_map_k400.txt"),
        "channels": ["red", "green", "blue"],
        "mean": list(IMAGENET_MEAN),
        "std": list(IMAGENET_STD),
        "data_range": 1.0,
        "pde": False,
        "frame_stride": 8,
        "short_side": 40,
        "crop_size": [32, 32],
        "short_clips": "loop",
        "test_clips": 1,
        "test_crops": 1,
    }
    return save_checkpoint(folder / "k400_lrcn.ckpt", "lrcn", LRCN_TINY, metadata)


def era5_forecaster(folder: Path, data: Path) -> Path:
    """SimVP-v2 with the metadata of ``data=era5_uk`` on the shared ERA5 file (12 hours in, its hours out)."""
    cfg = compose_config("train", ["data=era5_uk", f"paths.data_dir={data}"])
    dm = hydra.utils.instantiate(cfg.data)
    dm.setup()
    return save_checkpoint(
        folder / "era5_simvp.ckpt", "simvpv2", {"hid_S": 8, "hid_T": 16, "N_S": 2, "N_T": 2}, dm.metadata()
    )


def array_forecaster(folder: Path) -> Path:
    """FNO-2d on ``[3, 1, 16, 16]`` vorticity-like arrays, 2 steps out (a field checkpoint read from ``.npy``)."""
    metadata = {
        "dataset": "navier_stokes",
        "task": "forecast",
        "in_shape": [3, 1, 16, 16],
        "out_frames": 2,
        "channels": ["vorticity"],
        "units": ["1/s"],
        "mean": [0.0],
        "std": [1.0],
        "data_range": None,
        "pde": True,
    }
    return save_checkpoint(folder / "ns_fno.ckpt", "fno2d", FNO_TINY, metadata)
