"""Where the model lives on the ranks: the block layout (pure bookkeeping), the
communication groups it implies, the inner-product spaces the solvers reduce in,
the non-blocking completion vote, and the gathers and scatters between the blocks
and rank 0's dense network. Only `groups`, `vote` and `gather_scatter` touch MPI."""
