"""NewtonRegressor against scikit-learn's MLPRegressor on the diabetes set: held-out R^2.

    python bench/studies/regressor_diabetes.py [--splits 10] [--hidden 16] [--defaults]

For each split (train_test_split's random_state 0..splits-1, a quarter held out;
X and y standardized with the training part's means and deviations), each
estimator's regularization is chosen by the same cross-validation on the training
part (5 folds, repeated 3 times) over one grid: C for dnewton, alpha = 1 / (2 C)
for MLPRegressor, everything else at its default but the hidden layers and
random_state 0. With --defaults, both estimators keep every default instead
(but the hidden layers and random_state 0), as tests/test_regressor.py compares
them. It prints both R^2 on the held-out quarter, and at the end their means,
standard deviations over the splits, and how often dnewton's is at least
MLPRegressor's. Accuracy only, one process; no timing.
"""

import argparse
import warnings

import numpy as np

# alpha = 1 / (2 C) weighs the penalty alike in full-batch training (f l / 2 is then
# MLPRegressor's loss times l, less the biases' penalty, which it leaves out); its
# mini-batches weigh it by their own size instead of l. The grid is wide enough that
# neither estimator's choice sits at an end of it.
C_GRID = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 1.0)


def split(random_state):
    """(X, y, X_test, y_test): diabetes with a quarter held out, standardized."""
    from sklearn.datasets import load_diabetes
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    X, y = load_diabetes(return_X_y=True)
    X, X_test, y, y_test = train_test_split(X, y, test_size=0.25, random_state=random_state)
    scaler = StandardScaler().fit(X)
    mean, std = y.mean(), y.std()
    return scaler.transform(X), (y - mean) / std, scaler.transform(X_test), (y_test - mean) / std


def compare(random_state, hidden=(16,)):
    """Both estimators tuned alike on split `random_state`: {"newton": R^2, "mlp":
    R^2, "C": dnewton's choice, "alpha": MLPRegressor's}."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import GridSearchCV, RepeatedKFold
    from sklearn.neural_network import MLPRegressor

    from dnewton import NewtonRegressor

    X, y, X_test, y_test = split(random_state)
    folds = RepeatedKFold(n_splits=5, n_repeats=3, random_state=0)
    newton = GridSearchCV(NewtonRegressor(hidden=hidden, random_state=0), {"C": C_GRID},
                          cv=folds).fit(X, y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # Adam's 200 epochs: its default
        mlp = GridSearchCV(MLPRegressor(hidden_layer_sizes=hidden, random_state=0),
                           {"alpha": [1 / (2 * C) for C in C_GRID]}, cv=folds).fit(X, y)
    return {"newton": float(newton.score(X_test, y_test)),
            "mlp": float(mlp.score(X_test, y_test)),
            "C": newton.best_params_["C"], "alpha": mlp.best_params_["alpha"]}


def compare_defaults(random_state, hidden=(16,)):
    """Both estimators at their defaults (but `hidden` and random_state 0) on split
    `random_state`: {"newton": R^2, "mlp": R^2}."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPRegressor

    from dnewton import NewtonRegressor

    X, y, X_test, y_test = split(random_state)
    newton = NewtonRegressor(hidden=hidden, random_state=0).fit(X, y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # Adam's 200 epochs: its default
        mlp = MLPRegressor(hidden_layer_sizes=hidden, random_state=0).fit(X, y)
    return {"newton": float(newton.score(X_test, y_test)),
            "mlp": float(mlp.score(X_test, y_test)), "C": newton.C, "alpha": mlp.alpha}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--splits", type=int, default=10, help="splits 0..N-1 (default 10)")
    parser.add_argument("--hidden", default="16", help="hidden widths, e.g. 32,16")
    parser.add_argument("--defaults", action="store_true",
                        help="both estimators at their defaults instead of tuned alike")
    args = parser.parse_args(argv)
    run = compare_defaults if args.defaults else compare
    hidden = tuple(int(w) for w in args.hidden.split(","))
    print(f"{'split':>5} {'dnewton R^2':>11} {'(C)':>7} {'MLP R^2':>8} {'(alpha)':>8}")
    found = []
    for random_state in range(args.splits):
        result = run(random_state, hidden)
        found.append((result["newton"], result["mlp"]))
        print(f"{random_state:>5} {result['newton']:>11.4f} {result['C']:>7g} "
              f"{result['mlp']:>8.4f} {result['alpha']:>8g}", flush=True)
    (newton, mlp), (newton_sd, mlp_sd) = np.mean(found, axis=0), np.std(found, axis=0)
    wins = sum(n >= m for n, m in found)
    print(f" mean {newton:>11.4f} {'':>7} {mlp:>8.4f}; dnewton at least MLPRegressor's on "
          f"{wins} of {len(found)} split(s)")
    print(f"   sd {newton_sd:>11.4f} {'':>7} {mlp_sd:>8.4f}")


if __name__ == "__main__":
    main()
