"""Train an MNIST classifier (the paper's Caffe LeNet, or an MLP), optionally adversarially
(PGD, Madry et al. 2018), and write a classifier checkpoint with its clean and PGD accuracy.

    python scripts/train.py --seed 0 --out jaxfool/models/weights/lenet-mnist
    python scripts/train.py --seed 1 --out jaxfool/models/weights/lenet-mnist-b
    python scripts/train.py --seed 2 --arch mlp --out jaxfool/models/weights/mlp-mnist
    python scripts/train.py --seed 3 --adversarial-eps 0.3 --out jaxfool/models/weights/lenet-mnist-adv
"""

import argparse

from jaxfool.cli import add_config_flags, overrides_from_args, run_main
from jaxfool.models import save_checkpoint
from jaxfool.training import ARCHS, TrainConfig, train_mnist


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0, help="weight init and shuffling seed (default: 0)")
    parser.add_argument("--data", default=None, help="MNIST IDX directory (default: $JAXFOOL_DATA, then TFDS)")
    parser.add_argument("--out", default="runs/lenet-mnist", help="checkpoint path stem (default: runs/lenet-mnist)")
    parser.add_argument("--num-train", type=int, default=None, help="use only the first N training images")
    parser.add_argument("--arch", default="lenet", help=f"architecture: {' | '.join(ARCHS)} (default: lenet)")
    parser.add_argument("--pgd-test", type=int, default=1000, help="test images for the PGD accuracy (eps 0.3, 40 steps; 0: skip)")
    add_config_flags(parser, TrainConfig)
    args = parser.parse_args()
    config = TrainConfig(**overrides_from_args(args, TrainConfig))
    config.validate()
    params, meta = train_mnist(
        args.seed, args.data, config, args.num_train,
        on_epoch=lambda e, loss: print(f"epoch {e}/{config.epochs}  loss {loss:.4f}", flush=True),
        arch=args.arch, pgd_test=args.pgd_test,
    )
    path = save_checkpoint(args.out, params, meta)
    robust = f", under PGD (eps 0.3, 40 steps) {meta['pgd_accuracy']:.4f}" if "pgd_accuracy" in meta else ""
    print(f"test accuracy {meta['test_accuracy']:.4f}{robust}; wrote {path}")


if __name__ == "__main__":
    run_main(main)
