"""MNIST LeNet, direct encoding, the paper's settings: uniform parents, mutation only.

Sferes2 settings of Nguyen et al. (2015): 200 offspring per generation, parents uniform over
occupied cells, each pixel mutated with probability 0.1 by polynomial mutation (index 15),
no crossover (the paper's text), constant mutation rate (the paper's code).
"""

OVERRIDES = {
    "selection": "uniform",
    "recombine": False,
}
