"""Where the model lives on the ranks: the block layout (pure bookkeeping), the
communication groups it implies, the inner-product spaces the solvers reduce in,
and the non-blocking completion vote. Only `groups` and `vote` touch MPI."""
