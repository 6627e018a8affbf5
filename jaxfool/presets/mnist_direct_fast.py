"""MNIST LeNet, direct encoding: the paper's mutation, plus unfooled-first parents and recombination (default).

Keeps the paper's operator (each pixel mutates with probability 0.1, polynomial index 15)
and batch (200) and adds two things that reach 99.99 % in every class within ~20-30
generations instead of the paper code's ~120-170: parents are drawn from cells still below
the threshold, and each generation scores, per cell, its elite plus the sum of that
generation's mutations that improved it.
"""

OVERRIDES = {}
