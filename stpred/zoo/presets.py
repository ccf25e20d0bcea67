"""What the zoo trains: one project preset per entry, with the overrides, seed and main metric fixed."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ZooPreset", "PRESETS", "SEED", "preset"]

SEED = 42


@dataclass(frozen=True)
class ZooPreset:
    """A zoo entry's recipe.

    Attributes:
        name: the ``zoo:<name>`` name.
        overrides: ``stpred-train`` overrides (``{clips}`` stands for the folder of clip parts).
        metric: the main test metric of the zoo table.
        data: the data, in words.
        description: the model and setting, in words.
        clips: the run first cuts the shipped clips into train / val / test parts (``stpred-zoo clips``).
    """

    name: str
    overrides: tuple[str, ...]
    metric: str
    data: str
    description: str
    clips: bool = False


PRESETS: tuple[ZooPreset, ...] = (
    ZooPreset(
        "mmnist-simvpv2",
        ("experiment=cpu_mmnist_simvpv2",),
        "mse_frame",
        "Moving MNIST 10 -> 10 frames, 64x64 (MNIST t10k digits in disjoint pools, 128 test sequences)",
        "SimVPv2 (gSTA) at a quarter width, 3 CPU epochs of 512 sequences",
    ),
    ZooPreset(
        "ns-fno2d",
        ("experiment=quickstart",),
        "rel_l2",
        "Navier-Stokes vorticity nu=1e-3, 32x32, 10 -> 10 steps (stpred's solver, 160/20/20 trajectories)",
        "FNO-2D (modes 8, width 20), autoregressive, 8 CPU epochs",
    ),
    ZooPreset(
        "era5-t2m-simvpv2",
        ("experiment=cpu_era5_simvpv2",),
        "rmse_lat",
        "ERA5 2 m temperature over the UK, March 2019, 12 -> 12 h on 32x48 (test 26-31 March)",
        "small SimVPv2 (gSTA), 3 CPU epochs",
    ),
    ZooPreset(
        "kinetics-clips-simvpv2",
        ("experiment=zoo_clips_simvpv2", "data.root={clips}"),
        "mse",
        "the two shipped Kinetics clips, 8 -> 8 RGB frames at 32x32, each clip cut in time 70/15/15 % for "
        "train/val/test",
        "small SimVPv2 (gSTA) through data=frames, 6 CPU epochs",
        clips=True,
    ),
)


def preset(name: str) -> ZooPreset:
    """The recipe called ``name``; an unknown name is a :class:`~stpred.errors.UserError` listing the known ones."""
    from stpred.errors import UserError

    for p in PRESETS:
        if p.name == name:
            return p
    raise UserError(f"unknown zoo preset '{name}'; known: {', '.join(p.name for p in PRESETS)}")
