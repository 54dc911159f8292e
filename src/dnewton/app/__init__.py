"""Front ends and the one training run behind them: the problem assembled from
data and settings, `train`, prediction, the command line, progress output, plots
and the scikit-learn estimator."""
