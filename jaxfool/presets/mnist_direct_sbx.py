"""MNIST LeNet, direct encoding, the paper's code including its SBX crossover (rate 0.5, index 10).
"""

OVERRIDES = {
    "selection": "uniform",
    "recombine": False,
    "crossover_rate": 0.5,
    "crossover_eta": 10.0,
}
