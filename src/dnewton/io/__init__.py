"""Reading data and writing results: LIBSVM and .npz data, the feature-wise
partition, model files and checkpoints."""
