"""The block layout: groups, blocks, ownership and the communication groups."""

import itertools

import numpy as np
import pytest

from dnewton.errors import InputError
from dnewton.parallel.layout import Layout
from dnewton.planning.planner import layout_for

WIDTHS = (784, 300, 300, 10)


@pytest.mark.parametrize(
    "partitions, n_ranks",
    [((1, 1, 1, 1), 1), ((1, 1, 1, 1), 3), ((2, 1, 1, 1), 4), ((2, 3, 2, 1), 2),
     ((3, 2, 2, 2), 5)],
)
def test_blocks_cover_every_weight_once(partitions, n_ranks):
    layout = Layout(WIDTHS, partitions, n_ranks)
    assert len(layout.blocks) == Layout.count_blocks(partitions)
    for m in range(1, len(WIDTHS)):
        covered = np.zeros((WIDTHS[m - 1], WIDTHS[m]), dtype=int)
        for blk in layout.blocks:
            if blk.layer == m:
                covered[blk.rows, blk.cols] += 1
        assert (covered == 1).all()
        biases = [blk for blk in layout.blocks if blk.layer == m and blk.has_bias]
        assert sum(blk.shape[1] for blk in biases) == WIDTHS[m]
    assert sorted(set(layout.owner.tolist())) == list(range(n_ranks))


def test_one_block_per_rank_when_counts_match():
    layout = Layout(WIDTHS, (2, 2, 1, 1), 7)
    assert len(layout.blocks) == 7
    assert sorted(layout.owner.tolist()) == list(range(7))


def test_assignment_is_balanced():
    layout = Layout(WIDTHS, (4, 4, 4, 1), 4)
    load = np.zeros(4)
    for blk in layout.blocks:
        load[layout.owner[blk.index]] += layout._cost(blk)
    assert load.max() <= 4 / 3 * load.mean()


def test_groups_are_owners_of_the_right_blocks():
    layout = Layout(WIDTHS, (2, 2, 2, 1), 5)
    owner = {(b.layer, b.row, b.col): int(layout.owner[b.index]) for b in layout.blocks}
    for m, b in itertools.product((1, 2), range(2)):
        expected = {r for (mm, a, bb), r in owner.items() if mm == m and bb == b}
        expected |= {r for (mm, a, bb), r in owner.items() if mm == m + 1 and a == b}
        assert set(layout.forward_group(m, b)) == expected
    for m, a in itertools.product((2, 3), range(2)):
        if a >= layout.partitions[m - 1]:
            continue
        expected = {r for (mm, aa, b), r in owner.items() if mm == m and aa == a}
        expected |= {r for (mm, aa, b), r in owner.items() if mm == m - 1 and b == a}
        assert set(layout.backward_group(m, a)) == expected
    assert set(layout.output_group) == {r for (mm, a, b), r in owner.items() if mm == 3}


@pytest.mark.parametrize("n_ranks", [1, 2, 3, 4, 7, 16])
def test_default_layout_fits_rank_count(n_ranks):
    layout = layout_for(WIDTHS, n_ranks)
    assert len(layout.blocks) >= n_ranks
    assert sorted(set(layout.owner.tolist())) == list(range(n_ranks))


@pytest.mark.parametrize("n_ranks", [2, 3, 4])
def test_default_layout_keeps_every_rank_busy_in_the_big_layers(n_ranks):
    # Never whole layers per rank, taking turns: in each layer that holds a tenth
    # of the work or more, every rank has a share, and no share is above 4/3 of
    # the mean.
    layout = layout_for(WIDTHS, n_ranks)
    total = sum(a * b for a, b in zip(WIDTHS[:-1], WIDTHS[1:]))
    for m in range(1, len(WIDTHS)):
        if WIDTHS[m - 1] * WIDTHS[m] < total / 10:
            continue
        work = np.zeros(n_ranks)
        for blk in layout.blocks:
            if blk.layer == m:
                work[layout.owner[blk.index]] += blk.shape[0] * blk.shape[1]
        assert work.min() > 0 and work.max() <= 4 / 3 * work.mean(), (m, work)


def test_aligned_assignment_puts_consecutive_groups_together():
    # 1,2,1,1: column group b of layer 1 and row group b of layer 2 on rank b,
    # so s^1 needs no reduction at all.
    layout = Layout(WIDTHS, (1, 2, 1, 1), 2, "aligned")
    owner = {(b.layer, b.row, b.col): int(layout.owner[b.index]) for b in layout.blocks}
    assert owner[(1, 0, 0)] == owner[(2, 0, 0)] == 0
    assert owner[(1, 0, 1)] == owner[(2, 1, 0)] == 1
    assert layout.forward_group(1, 0) == (0,) and layout.forward_group(1, 1) == (1,)


def test_default_layout_single_rank_is_unsplit():
    assert layout_for(WIDTHS, 1).partitions == (1, 1, 1, 1)


@pytest.mark.parametrize(
    "partitions, n_ranks, message",
    [
        ((1, 1, 1), 1, "needs 4 counts"),
        ((1, 301, 1, 1), 1, "layer 1 has 300 neurons"),
        ((0, 1, 1, 1), 1, "cannot be split into 0"),
        ((1, 1, 1, 1), 4, "3 weight blocks but the job has 4 ranks"),
    ],
)
def test_bad_partitions_are_refused_with_a_reason(partitions, n_ranks, message):
    with pytest.raises(InputError, match=message):
        Layout(WIDTHS, partitions, n_ranks)


@pytest.mark.parametrize("partitions, n_ranks", [((1, 1, 1, 1), 1), ((2, 3, 2, 1), 3)])
def test_parameter_layout_orders_blocks_weights_then_bias(partitions, n_ranks):
    layout = Layout(WIDTHS[:2] + (7, 5), partitions, n_ranks)
    rng = np.random.default_rng(0)
    widths = layout.widths
    weights = [rng.standard_normal((widths[m - 1], widths[m])) for m in range(1, 4)]
    biases = [rng.standard_normal(widths[m]) for m in range(1, 4)]
    rebuilt_W = [np.full_like(W, np.nan) for W in weights]
    rebuilt_b = [np.full_like(b, np.nan) for b in biases]
    for rank in range(n_ranks):
        params = layout.parameters(rank)
        vec = params.scatter(weights, biases)
        assert vec.shape == (params.size,) == (sum(blk.size for blk in params.blocks),)
        for i, blk in enumerate(params.blocks):
            part = vec[params.block_slice(i)]
            W, bias = params.views(vec)[i]
            n_weights = blk.shape[0] * blk.shape[1]
            np.testing.assert_array_equal(part[:n_weights].reshape(blk.shape), W)
            np.testing.assert_array_equal(W, weights[blk.layer - 1][blk.rows, blk.cols])
            assert (bias is None) == (not blk.has_bias) == (len(part) == n_weights)
        params.gather(vec, rebuilt_W, rebuilt_b)
    for got, want in zip(rebuilt_W + rebuilt_b, weights + biases):
        np.testing.assert_array_equal(got, want)


def test_an_unknown_phase_fails_alike_on_one_rank_and_many():
    # A group of one rank does no communication, but still checks what it is told.
    from helpers import make_problem

    from dnewton.parallel.groups import Group
    from dnewton.parallel.ledger import Ledger

    alone = Group((0,), None, Ledger())
    with pytest.raises(ValueError, match="nonsense"):
        alone.allreduce(np.zeros(2), "nonsense")
    problem = make_problem()
    try:
        for call in (lambda: problem.groups.all.allreduce(np.zeros(2), "nonsense"),
                     lambda: problem.groups.broadcast(np.zeros(2), 0, "nonsense")):
            with pytest.raises(ValueError, match="nonsense"):
                call()
    finally:
        problem.close()
