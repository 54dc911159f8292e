"""The network and its objective on one rank's share of the blocks: activations,
losses, the distributed passes, f and its gradient, the Gauss-Newton operator."""
