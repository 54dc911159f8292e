"""Optimizers that see no MPI: conjugate gradient, the Newton direction, the
line search, the Newton loop, and the mini-batch baselines SGD and Adam. They
reduce only through an inner-product space (`dnewton.parallel.space`) handed to
them."""
