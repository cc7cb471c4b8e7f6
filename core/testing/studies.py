"""A tiny study file for tests and benchmarks: 2 simulated subjects x 2 layers of 20 train / 10 test samples on
300 voxels (seconds per run on 2 cores)."""
from __future__ import annotations

__all__ = ["tiny_study"]


def tiny_study(layers=("layer4", "pool"), name: str = "tiny") -> str:
    """The study file's text; ``layers`` its layers axis."""
    listed = ", ".join(f'"{lay}"' for lay in layers)
    return (f'preset = "demo"\n[simulation]\nn_train = 20\nn_test = 10\nimage_size = 64\nn_voxels = 300\n'
            f'[features]\ninput_size = 64\n[study]\nname = "{name}"\nlayers = [{listed}]\n'
            '[[study.subjects]]\nlabel = "sim-1"\nseed = 0\n[[study.subjects]]\nlabel = "sim-2"\nseed = 2\n')
