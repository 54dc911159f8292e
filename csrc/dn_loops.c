#include "dn_loops.h"

#include <math.h>

static double sigmoid(double s)
{
    /* Two branches so exp never overflows. */
    if (s >= 0.0) {
        return 1.0 / (1.0 + exp(-s));
    }
    double e = exp(s);
    return e / (1.0 + e);
}

void dn_activation_forward(int kind, const double *s, double *z, size_t n)
{
    size_t i;
    switch (kind) {
    case DN_RELU:
        for (i = 0; i < n; i++) z[i] = s[i] > 0.0 ? s[i] : 0.0;
        break;
    case DN_SIGMOID:
        for (i = 0; i < n; i++) z[i] = sigmoid(s[i]);
        break;
    case DN_TANH:
        for (i = 0; i < n; i++) z[i] = tanh(s[i]);
        break;
    default:
        for (i = 0; i < n; i++) z[i] = s[i];
        break;
    }
}

static double derivative(int kind, double s, double z)
{
    switch (kind) {
    case DN_RELU:
        return s > 0.0 ? 1.0 : 0.0;
    case DN_SIGMOID:
        return z * (1.0 - z);
    case DN_TANH:
        return 1.0 - z * z;
    default:
        return 1.0;
    }
}

void dn_activation_scale(int kind, const double *s, const double *z, double *g,
                         size_t rows, size_t repeat, size_t k)
{
    for (size_t i = 0; i < rows; i++) {
        const double *si = s + i * k, *zi = z + i * k;
        double *gi = g + i * repeat * k;
        for (size_t c = 0; c < k; c++) {
            double d = derivative(kind, si[c], zi[c]);
            for (size_t j = 0; j < repeat; j++) gi[j * k + c] *= d;
        }
    }
}

void dn_batched_matvec(const double *D, const double *u, double *out,
                       size_t n, size_t nl, size_t k)
{
    for (size_t i = 0; i < n; i++) {
        const double *Di = D + i * nl * k, *ui = u + i * k;
        double *oi = out + i * nl;
        for (size_t j = 0; j < nl; j++) {
            const double *row = Di + j * k;
            double acc = 0.0;
            for (size_t c = 0; c < k; c++) acc += row[c] * ui[c];
            oi[j] += acc;
        }
    }
}

void dn_batched_matvec_t(const double *D, const double *q, double *t,
                         size_t n, size_t nl, size_t k)
{
    for (size_t i = 0; i < n; i++) {
        const double *Di = D + i * nl * k, *qi = q + i * nl;
        double *ti = t + i * k;
        for (size_t c = 0; c < k; c++) ti[c] = 0.0;
        for (size_t j = 0; j < nl; j++) {
            const double *row = Di + j * k;
            double w = qi[j];
            for (size_t c = 0; c < k; c++) ti[c] += w * row[c];
        }
    }
}

void dn_add_row(double *out, const double *row, size_t n, size_t k)
{
    for (size_t i = 0; i < n; i++) {
        double *oi = out + i * k;
        for (size_t c = 0; c < k; c++) oi[c] += row[c];
    }
}

void dn_add_column_sums(const double *a, double *sums, double scale, size_t n, size_t k)
{
    for (size_t i = 0; i < n; i++) {
        const double *ai = a + i * k;
        for (size_t c = 0; c < k; c++) sums[c] += scale * ai[c];
    }
}

double dn_cg_step(double *x, double *r, const double *p, const double *q, double *ax,
                  double alpha, size_t n)
{
    double rr = 0.0;
    for (size_t i = 0; i < n; i++) {
        x[i] += alpha * p[i];
        r[i] -= alpha * q[i];
        ax[i] += alpha * q[i];
        rr += r[i] * r[i];
    }
    return rr;
}

void dn_cg_direction(double *p, const double *r, double beta, size_t n)
{
    for (size_t i = 0; i < n; i++) p[i] = r[i] + beta * p[i];
}

double dn_dot(const double *a, const double *b, size_t n)
{
    double acc = 0.0;
    for (size_t i = 0; i < n; i++) acc += a[i] * b[i];
    return acc;
}
