/* The body of every loop of dn_loops.h in one precision: included by dn_loops.c
 * once per precision with REAL (the element type) and NAME(x) (x with its
 * suffix) defined. Not compiled on its own. */

static REAL NAME(sigmoid)(REAL s)
{
    /* Two branches so exp never overflows. */
    if (s >= 0) {
        return 1 / (1 + EXP(-s));
    }
    REAL e = EXP(s);
    return e / (1 + e);
}

DN_CLONES
void NAME(dn_activation_forward)(int kind, const REAL *s, REAL *z, size_t n)
{
    switch (kind) {
    case DN_RELU:
        DN_PARALLEL_FOR(n)
        for (size_t i = 0; i < n; i++) z[i] = s[i] > 0 ? s[i] : 0;
        break;
    case DN_SIGMOID:
        DN_PARALLEL_FOR(8 * n)
        for (size_t i = 0; i < n; i++) z[i] = NAME(sigmoid)(s[i]);
        break;
    case DN_TANH:
        DN_PARALLEL_FOR(8 * n)
        for (size_t i = 0; i < n; i++) z[i] = TANH(s[i]);
        break;
    default:
        DN_PARALLEL_FOR(n)
        for (size_t i = 0; i < n; i++) z[i] = s[i];
        break;
    }
}

static REAL NAME(derivative)(int kind, REAL s, REAL z)
{
    switch (kind) {
    case DN_RELU:
        return s > 0 ? 1 : 0;
    case DN_SIGMOID:
        return z * (1 - z);
    case DN_TANH:
        return 1 - z * z;
    default:
        return 1;
    }
}

DN_CLONES
void NAME(dn_activation_scale)(int kind, const REAL *s, const REAL *z, REAL *g,
                               size_t rows, size_t repeat, size_t k)
{
    DN_PARALLEL_FOR(rows * repeat * k)
    for (size_t i = 0; i < rows; i++) {
        const REAL *si = s + i * k, *zi = z + i * k;
        REAL *gi = g + i * repeat * k;
        if (kind == DN_RELU) {
            /* The common case: a mask, applied row by row so the loop vectorizes. */
            for (size_t j = 0; j < repeat; j++) {
                REAL *row = gi + j * k;
                for (size_t c = 0; c < k; c++) row[c] = si[c] > 0 ? row[c] : 0;
            }
            continue;
        }
        for (size_t c = 0; c < k; c++) {
            REAL d = NAME(derivative)(kind, si[c], zi[c]);
            for (size_t j = 0; j < repeat; j++) gi[j * k + c] *= d;
        }
    }
}

DN_CLONES
void NAME(dn_batched_matvec)(const REAL *D, const REAL *u, double *out,
                             size_t n, size_t nl, size_t k)
{
    DN_PARALLEL_FOR(n * nl * k)
    for (size_t i = 0; i < n; i++) {
        const REAL *Di = D + i * nl * k, *ui = u + i * k;
        double *oi = out + i * nl;
        size_t j = 0;
#ifdef DN_ORDERED_SUMS
        /* Eight rows at once, then two: several sums, each still taken in the
         * order of c (the same result as one row at a time), whose adds no longer
         * wait on one another; one sum's chain of dependent adds runs at a
         * fraction of the adder's rate. */
        for (; j + 8 <= nl; j += 8) {
            const REAL *rows = Di + j * k;
            REAL acc[8] = {0};
            for (size_t c = 0; c < k; c++) {
                REAL uc = ui[c];
                for (size_t q = 0; q < 8; q++) acc[q] += rows[q * k + c] * uc;
            }
            for (size_t q = 0; q < 8; q++) oi[j + q] += acc[q];
        }
        for (; j + 2 <= nl; j += 2) {
            const REAL *r0 = Di + j * k, *r1 = r0 + k;
            REAL a0 = 0, a1 = 0;
            for (size_t c = 0; c < k; c++) {
                a0 += r0[c] * ui[c];
                a1 += r1[c] * ui[c];
            }
            oi[j] += a0;
            oi[j + 1] += a1;
        }
#endif
        for (; j < nl; j++) {
            const REAL *row = Di + j * k;
            REAL acc = 0;
            /* In float32, reassociated to use the vector units (dn_loops.c). */
            DN_SIMD_REDUCTION
            for (size_t c = 0; c < k; c++) acc += row[c] * ui[c];
            oi[j] += acc;
        }
    }
}

DN_CLONES
void NAME(dn_batched_matvec_t)(const REAL *D, const double *q, REAL *t,
                               size_t n, size_t nl, size_t k)
{
    DN_PARALLEL_FOR(n * nl * k)
    for (size_t i = 0; i < n; i++) {
        const REAL *Di = D + i * nl * k;
        const double *qi = q + i * nl;
        REAL *ti = t + i * k;
        for (size_t c = 0; c < k; c++) ti[c] = 0;
        for (size_t j = 0; j < nl; j++) {
            const REAL *row = Di + j * k;
            REAL w = (REAL)qi[j];
            for (size_t c = 0; c < k; c++) ti[c] += w * row[c];
        }
    }
}

DN_CLONES
void NAME(dn_add_row)(REAL *out, const REAL *row, size_t n, size_t k)
{
    DN_PARALLEL_FOR(n * k)
    for (size_t i = 0; i < n; i++) {
        REAL *oi = out + i * k;
        for (size_t c = 0; c < k; c++) oi[c] += row[c];
    }
}

DN_CLONES
void NAME(dn_add_column_sums)(const REAL *a, REAL *sums, double scale, size_t n, size_t k)
{
    REAL w = (REAL)scale;
    for (size_t i = 0; i < n; i++) {
        const REAL *ai = a + i * k;
        for (size_t c = 0; c < k; c++) sums[c] += w * ai[c];
    }
}

DN_CLONES
double NAME(dn_cg_step)(REAL *x, REAL *r, const REAL *p, const REAL *q, REAL *ax,
                        double alpha, size_t n)
{
    REAL a = (REAL)alpha;
    double acc = 0.0;  /* r.r */
    DN_SIMD_REDUCTION
    for (size_t i = 0; i < n; i++) {
        x[i] += a * p[i];
        r[i] -= a * q[i];
        ax[i] += a * q[i];
        acc += (double)r[i] * r[i];
    }
    return acc;
}

DN_CLONES
void NAME(dn_cg_direction)(REAL *p, const REAL *r, double beta, size_t n)
{
    REAL b = (REAL)beta;
    DN_PARALLEL_FOR(n)
    for (size_t i = 0; i < n; i++) p[i] = r[i] + b * p[i];
}

DN_CLONES
double NAME(dn_dot)(const REAL *a, const REAL *b, size_t n)
{
    double acc = 0.0;
    DN_SIMD_REDUCTION
    for (size_t i = 0; i < n; i++) acc += (double)a[i] * b[i];
    return acc;
}

/* The CSR products touch only the stored entries: 2 nnz b FLOPs each, where the
 * dense GEMM would take 2 n a b. Indices are int32 (io/data.py converts once). */
DN_CLONES
void NAME(dn_csr_matmul)(const REAL *data, const int32_t *indices, const int32_t *indptr,
                         size_t n, const REAL *W, size_t b, REAL *out, int accumulate)
{
    /* out never overlaps W: `restrict` lets the row update vectorize unguarded. */
    /* Rows of out are independent: each is a sum of the rows of W its entries pick. */
    DN_PARALLEL_FOR((size_t)indptr[n] * b)
    for (size_t i = 0; i < n; i++) {
        REAL *restrict oi = out + i * b;
        if (!accumulate) {
            for (size_t c = 0; c < b; c++) oi[c] = 0;
        }
        for (int32_t k = indptr[i]; k < indptr[i + 1]; k++) {
            const REAL v = data[k];
            const REAL *restrict w = W + (size_t)indices[k] * b;
            for (size_t c = 0; c < b; c++) oi[c] += v * w[c];
        }
    }
}

DN_CLONES
void NAME(dn_csr_t_matmul)(const REAL *data, const int32_t *indices, const int32_t *indptr,
                           size_t n, const REAL *T, size_t b, REAL *out, double scale)
{
    /* A scatter into rows of out that several instances share: kept serial, so
     * the sums keep one order whatever the threads. */
    const REAL s = (REAL)scale;
    for (size_t i = 0; i < n; i++) {
        const REAL *restrict ti = T + i * b;
        for (int32_t k = indptr[i]; k < indptr[i + 1]; k++) {
            const REAL v = s * data[k];
            REAL *restrict o = out + (size_t)indices[k] * b;
            for (size_t c = 0; c < b; c++) o[c] += v * ti[c];
        }
    }
}
