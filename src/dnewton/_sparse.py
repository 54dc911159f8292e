"""scipy.sparse, imported only when sparse data are read.

A run on dense data (a ``.npz`` of pixels) never needs scipy.sparse, which costs
about 17 MB of memory and a tenth of a second on every rank. No object can be a
scipy sparse matrix before scipy.sparse is imported, so `issparse` answers without
importing it; the constructors import it on first use.
"""

import sys


def issparse(x):
    """Whether `x` is a scipy.sparse matrix or array (never before scipy.sparse is
    imported)."""
    module = sys.modules.get("scipy.sparse")
    return module is not None and module.issparse(x)


def csr_matrix(*args, **kwargs):
    """`scipy.sparse.csr_matrix`, imported on first use."""
    from scipy.sparse import csr_matrix as make

    return make(*args, **kwargs)
