#!/usr/bin/env python
"""Train a VideoGeneUNet on a prepared gene-video dataset with Hugging Face Accelerate.

    accelerate launch train.py --config configs/tiny.yaml data.path=runs/data output_dir=runs/tiny
    python train.py --config configs/tiny.yaml data.path=runs/data max_steps=200   # one device
    accelerate launch --config_file configs/accelerate/ddp.yaml train.py --config configs/base.yaml ...
    python train.py --config configs/tiny.yaml ... --resume latest --push_to_hub --hub_model_id me/m

A shim over ``videogene.training.loop`` (``videogene train`` runs the same). Options are
``key=value`` overrides of the YAML config; see docs/training.md.
"""

import sys

from videogene.training.loop import cli

if __name__ == "__main__":
    sys.exit(cli(prog="train.py"))
