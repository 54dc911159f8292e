"""NewtonRegressor's default C: held-out R^2 over C on five small regression sets.

    python bench/studies/regressor_c.py [--splits 5] [--hidden 16]

scikit-learn's diabetes and linnerud sets and its Friedman #1-#3 generators (500
instances, noise 1, 100 and 0.1, seed 0); for each, splits of train_test_split's
random_state 0..splits-1 with a quarter held out, X standardized with the
training part's means and deviations, y left to the regressor's `normalize_y`.
Each C of the grid is fitted at every other default (but the hidden layers and
random_state 0); MLPRegressor at its defaults is the reference. It prints the
mean held-out R^2 per set and C. Accuracy only, one process; no timing.
"""

import argparse
import warnings

import numpy as np

C_GRID = (0.01, 0.03, 0.1, 0.3, 1.0)


def data_sets():
    from sklearn.datasets import (
        load_diabetes,
        load_linnerud,
        make_friedman1,
        make_friedman2,
        make_friedman3,
    )

    return {"diabetes": load_diabetes(return_X_y=True),
            "linnerud": load_linnerud(return_X_y=True),
            "friedman1": make_friedman1(500, noise=1.0, random_state=0),
            "friedman2": make_friedman2(500, noise=100.0, random_state=0),
            "friedman3": make_friedman3(500, noise=0.1, random_state=0)}


def scores(X, y, splits, hidden):
    """{C: mean held-out R^2, "mlp": MLPRegressor's} over the splits."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import train_test_split
    from sklearn.neural_network import MLPRegressor
    from sklearn.preprocessing import StandardScaler

    from dnewton import NewtonRegressor

    found = {key: [] for key in (*C_GRID, "mlp")}
    for random_state in range(splits):
        X_fit, X_test, y_fit, y_test = train_test_split(X, y, test_size=0.25,
                                                        random_state=random_state)
        scaler = StandardScaler().fit(X_fit)
        X_fit, X_test = scaler.transform(X_fit), scaler.transform(X_test)
        for C in C_GRID:
            reg = NewtonRegressor(hidden=hidden, C=C, random_state=0).fit(X_fit, y_fit)
            found[C].append(reg.score(X_test, y_test))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            # MLPRegressor does not scale y: it is given y standardized, as the
            # regressor's normalize_y does.
            mean, std = y_fit.mean(axis=0), y_fit.std(axis=0)
            mlp = MLPRegressor(hidden_layer_sizes=hidden, random_state=0).fit(
                X_fit, (y_fit - mean) / std)
            found["mlp"].append(mlp.score(X_test, (y_test - mean) / std))
    return {key: float(np.mean(values)) for key, values in found.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--splits", type=int, default=5, help="splits 0..N-1 (default 5)")
    parser.add_argument("--hidden", default="16", help="hidden widths, e.g. 64")
    args = parser.parse_args(argv)
    hidden = tuple(int(w) for w in args.hidden.split(","))
    print(f"{'set':>10} " + " ".join(f"{'C=' + format(C, 'g'):>7}" for C in C_GRID)
          + f" {'MLP':>7}")
    for name, (X, y) in data_sets().items():
        found = scores(X, y, args.splits, hidden)
        print(f"{name:>10} " + " ".join(f"{found[C]:>7.3f}" for C in C_GRID)
              + f" {found['mlp']:>7.3f}", flush=True)


if __name__ == "__main__":
    main()
