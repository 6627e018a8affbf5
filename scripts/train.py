"""Train the paper's Caffe LeNet on MNIST and write a classifier checkpoint.

    python scripts/train.py --seed 0 --out jaxfool/models/weights/lenet-mnist
    python scripts/train.py --seed 1 --out jaxfool/models/weights/lenet-mnist-b
"""

import argparse

from jaxfool.cli import add_config_flags, overrides_from_args, run_main
from jaxfool.models import save_checkpoint
from jaxfool.training import TrainConfig, train_mnist_lenet


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0, help="weight init and shuffling seed (default: 0)")
    parser.add_argument("--data", default=None, help="MNIST IDX directory (default: $JAXFOOL_DATA, then TFDS)")
    parser.add_argument("--out", default="runs/lenet-mnist", help="checkpoint path stem (default: runs/lenet-mnist)")
    parser.add_argument("--num-train", type=int, default=None, help="use only the first N training images")
    add_config_flags(parser, TrainConfig)
    args = parser.parse_args()
    config = TrainConfig(**overrides_from_args(args, TrainConfig))
    config.validate()
    params, meta = train_mnist_lenet(
        args.seed, args.data, config, args.num_train,
        on_epoch=lambda e, loss: print(f"epoch {e}/{config.epochs}  loss {loss:.4f}", flush=True),
    )
    path = save_checkpoint(args.out, params, meta)
    print(f"test accuracy {meta['test_accuracy']:.4f}; wrote {path}")


if __name__ == "__main__":
    run_main(main)
