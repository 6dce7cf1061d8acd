#!/usr/bin/env bash
# CPU demo on a folder of your own kind of images: CReST+ with --dataset=folder.
#
# Makes data/fashion_mnist_folder first if it is missing (scripts/make_image_folder.py:
# Fashion-MNIST-LT, imbalance 100, 10% labeled, fold 1, as PNG files in
# labeled/<class>/, unlabeled/<class>/, test/<class>/), then runs the same 2 short
# generations as scripts/demo.sh on it, reading the folder as any user's. Outputs:
# runs/demo_folder; the fold built from the folder is in runs/demo_folder/data, with
# paths.json naming the file of every id. Sets up the machine first (scripts/setup.sh).
# Extra arguments go to scripts/crest.py. To run on your own images instead:
#   .venv/bin/python scripts/crest.py --dataset=folder --data_dir=YOUR_FOLDER --arch=cnn_small ...
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
folder=data/fashion_mnist_folder
if [ ! -d "$folder" ]; then
  rm -rf "$folder.tmp"  # Left by an interrupted run.
  .venv/bin/python scripts/make_image_folder.py --output_dir="$folder.tmp"
  mv "$folder.tmp" "$folder"
fi
exec .venv/bin/python scripts/crest.py \
  --dataset=folder --data_dir="$folder" \
  --arch=cnn_small --generations=2 --dist_align=progressive \
  --steps_per_generation=900 --eval_every=90 --batch_size=32 --uratio=1 \
  --lr_decay_level=7 --ema_warmup --seed=1 \
  --workdir=runs/demo_folder "$@"
