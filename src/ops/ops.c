#include "ops/ops.h"

#include "kernels/kernels.h"

#include "base/fp16.h"

#include <pthread.h>

#include <stdatomic.h>

#include <math.h>
#include <string.h>

void op_rmsnorm(float *out, const float *x, const float *w, int64_t n, float eps)
{
    double sum = 0; /* float squares summed in double, as the reference does */
    for (int64_t i = 0; i < n; i++)
        sum += (double)(x[i] * x[i]);
    float scale = 1.0f / sqrtf((float)(sum / (double)n) + eps);
    if (w)
        for (int64_t i = 0; i < n; i++)
            out[i] = x[i] * scale * w[i];
    else
        for (int64_t i = 0; i < n; i++)
            out[i] = x[i] * scale;
}

void op_rope_yarn_corr_dims(int n_rot, int64_t n_ctx_orig, float base, float beta_fast, float beta_slow,
                            float dims[2])
{
    /* the pair whose wavelength fits `rotations` turns in n_ctx_orig */
    const float n_orig = (float)n_ctx_orig, two_pi = 2.0f * 3.14159265358979323846f;
    const float lo = floorf((float)n_rot * logf(n_orig / (beta_fast * two_pi)) / (2.0f * logf(base)));
    const float hi = ceilf((float)n_rot * logf(n_orig / (beta_slow * two_pi)) / (2.0f * logf(base)));
    dims[0] = lo > 0 ? lo : 0;
    dims[1] = hi < (float)(n_rot - 1) ? hi : (float)(n_rot - 1);
}

void op_rope_angles(int64_t pos, const struct rope_params *rp, float *cs)
{
    const int half = rp->n_rot / 2;
    /* theta_i = pos * base^(-2i/n_rot), built by repeated multiplication
     * in float as the reference implementation does, so that angles agree
     * to the last bit at every position */
    const float theta_scale = powf(rp->base, -2.0f / (float)rp->n_rot);
    float mscale = rp->attn_factor != 0 ? rp->attn_factor : 1.0f;
    if (rp->ext_factor != 0)
        mscale *= 1.0f + 0.1f * logf(1.0f / rp->freq_scale);
    float theta = (float)pos;
    for (int i = 0; i < half; i++, theta *= theta_scale) {
        const float extrap = rp->freq_factors ? theta / rp->freq_factors[i] : theta;
        float angle = extrap * rp->freq_scale;
        if (rp->ext_factor != 0) {
            /* YaRN: the low pairs (short wavelengths) keep their angle */
            const float lo = rp->corr_dims[0], hi = rp->corr_dims[1];
            const float y = ((float)i - lo) / fmaxf(0.001f, hi - lo);
            const float mix = (1.0f - fminf(1.0f, fmaxf(0.0f, y))) * rp->ext_factor;
            angle = angle * (1.0f - mix) + extrap * mix;
        }
        float c = cosf(angle), s = sinf(angle);
        if (mscale != 1.0f) {
            c *= mscale;
            s *= mscale;
        }
        cs[2 * i] = c;
        cs[2 * i + 1] = s;
    }
}

void op_rope_apply(float *x, int n_head, int head_dim, const float *cs, const struct rope_params *rp)
{
    const int half = rp->n_rot / 2;
    for (int h = 0; h < n_head; h++) {
        float *v = x + (size_t)h * head_dim;
        if (rp->style == ROPE_NORM) {
            for (int i = 0; i < half; i++) {
                const float c = cs[2 * i], s = cs[2 * i + 1], x0 = v[2 * i], x1 = v[2 * i + 1];
                v[2 * i] = x0 * c - x1 * s;
                v[2 * i + 1] = x0 * s + x1 * c;
            }
        } else {
            for (int i = 0; i < half; i++) {
                const float c = cs[2 * i], s = cs[2 * i + 1], x0 = v[i], x1 = v[i + half];
                v[i] = x0 * c - x1 * s;
                v[i + half] = x0 * s + x1 * c;
            }
        }
    }
}

void op_add(float *x, const float *y, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        x[i] += y[i];
}

void op_get_row(const struct pb_tensor *t, int64_t row, float *out)
{
    const struct pb_type_traits *tr = pb_type_get(t->type);
    tr->to_float((const uint8_t *)t->data + (size_t)row * t->row_bytes, out, t->ne[0]);
}

/* ---- on the pool ---- */

struct rows_job {
    float *out;
    const float *x, *w;
    int n_rows;
    int64_t n;
    float eps;
};

static void rmsnorm_worker(void *arg, int ith, int nth)
{
    const struct rows_job *j = arg;
    long r0, r1;
    pool_range(j->n_rows, ith, nth, &r0, &r1);
    for (long r = r0; r < r1; r++)
        op_rmsnorm(j->out + (size_t)r * (size_t)j->n, j->x + (size_t)r * (size_t)j->n, j->w, j->n, j->eps);
}

void op_rmsnorm_rows(struct pool *pool, float *out, const float *x, const float *w, int n_rows, int64_t n, float eps)
{
    struct rows_job j = {out, x, w, n_rows, n, eps};
    if (n_rows == 1)
        rmsnorm_worker(&j, 0, 1);
    else
        pool_run(pool, rmsnorm_worker, &j);
}

/* GELU (tanh approximation) of every half-precision value, as half
 * precision: built once. */
static uint16_t gelu_table[1 << 16];
static pthread_once_t gelu_once = PTHREAD_ONCE_INIT;

static void gelu_table_build(void)
{
    for (uint32_t i = 0; i < (1u << 16); i++) {
        const float x = fp16_to_f32((uint16_t)i);
        const float g = 0.5f * x * (1.0f + tanhf(0.79788456080286535588f * x * (1.0f + 0.044715f * x * x)));
        gelu_table[i] = f32_to_fp16(g);
    }
}

static void geglu_rows(float *g, const float *u, int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        const float x = g[i];
        if (x <= -10.0f)
            g[i] = 0.0f;
        else if (x >= 10.0f)
            g[i] = x * u[i];
        else
            g[i] = fp16_to_f32(gelu_table[f32_to_fp16(x)]) * u[i];
    }
}

struct swiglu_job {
    kern_swiglu_fn fn;
    float *g;
    const float *u;
    int64_t n;
};

static void swiglu_worker(void *arg, int ith, int nth)
{
    const struct swiglu_job *j = arg;
    long a, b;
    pool_range((long)((j->n + 7) / 8), ith, nth, &a, &b); /* in whole vectors */
    a *= 8;
    b = b * 8 < j->n ? b * 8 : (long)j->n;
    if (b > a)
        j->fn(j->g + a, j->u + a, b - a);
}

/* g = fn(g, u) over n elements, split over the pool for large n. */
static void gated(struct pool *pool, kern_swiglu_fn fn, float *g, const float *u, int64_t n)
{
    struct swiglu_job j = {fn, g, u, n};
    if (n < 16384) /* a decode step: not worth waking the pool */
        swiglu_worker(&j, 0, 1);
    else
        pool_run(pool, swiglu_worker, &j);
}

void op_swiglu(struct pool *pool, float *g, const float *u, int64_t n)
{
    gated(pool, kern_swiglu_for(kern_level()), g, u, n);
}

void op_geglu(struct pool *pool, float *g, const float *u, int64_t n)
{
    pthread_once(&gelu_once, gelu_table_build);
    gated(pool, geglu_rows, g, u, n);
}

void op_gelu(float *x, int64_t n)
{
    pthread_once(&gelu_once, gelu_table_build);
    for (int64_t i = 0; i < n; i++) {
        const float v = x[i];
        x[i] = v <= -10.0f ? 0.0f : v >= 10.0f ? v : fp16_to_f32(gelu_table[f32_to_fp16(v)]);
    }
}

void op_layernorm_rows(float *out, const float *x, const float *w, const float *b, int n_rows, int64_t n, float eps)
{
    for (int r = 0; r < n_rows; r++) {
        const float *xr = x + (size_t)r * (size_t)n;
        float *o = out + (size_t)r * (size_t)n;
        double sum = 0, var = 0;
        for (int64_t i = 0; i < n; i++)
            sum += xr[i];
        const float mean = (float)(sum / (double)n);
        for (int64_t i = 0; i < n; i++) {
            const float d = xr[i] - mean;
            o[i] = d;
            var += (double)d * d;
        }
        const float scale = 1.0f / sqrtf((float)(var / (double)n) + eps);
        for (int64_t i = 0; i < n; i++)
            o[i] = o[i] * scale * (w ? w[i] : 1.0f) + (b ? b[i] : 0.0f);
    }
}

void op_swiglu_oai(float *g, const float *u, int64_t n, float alpha, float limit)
{
    for (int64_t i = 0; i < n; i++) {
        const float x = fminf(g[i], limit), y = fminf(fmaxf(u[i], -limit), limit);
        g[i] = x / (1.0f + expf(alpha * -x)) * (y + 1.0f);
    }
}

void op_softcap(float *x, int64_t n, float cap)
{
    const float inv = 1.0f / cap;
    for (int64_t i = 0; i < n; i++)
        x[i] = tanhf(x[i] * inv) * cap;
}

struct rope_job {
    float *q, *k;
    int n_rows, q_heads, k_heads, head_dim;
    const float *cs;
    const struct rope_params *rp;
    op_rows_fn then;
    void *ctx;
};

static void rope_worker(void *arg, int ith, int nth)
{
    const struct rope_job *j = arg;
    long r0, r1;
    pool_range(j->n_rows, ith, nth, &r0, &r1);
    if (r0 >= r1)
        return;
    const size_t qs = (size_t)j->q_heads * (size_t)j->head_dim, ks = (size_t)j->k_heads * (size_t)j->head_dim;
    if (j->cs)
        for (long r = r0; r < r1; r++) {
            const float *cs = j->cs + (size_t)r * (size_t)j->rp->n_rot;
            op_rope_apply(j->q + (size_t)r * qs, j->q_heads, j->head_dim, cs, j->rp);
            op_rope_apply(j->k + (size_t)r * ks, j->k_heads, j->head_dim, cs, j->rp);
        }
    if (j->then)
        j->then(j->ctx, (int)r0, (int)r1);
}

void op_rope_qk_rows(struct pool *pool, float *q, int q_heads, float *k, int k_heads, int head_dim, int n_rows,
                     const float *cs, const struct rope_params *rp, op_rows_fn then, void *ctx)
{
    struct rope_job j = {q, k, n_rows, q_heads, k_heads, head_dim, cs, rp, then, ctx};
    if (n_rows == 1)
        rope_worker(&j, 0, 1);
    else
        pool_run(pool, rope_worker, &j);
}

/* ---- attention ---- */

size_t op_attention_scratch(const struct kern_attn_args *a)
{
    return (kern_attn_scratch(a) + 15) / 16 * 16;
}

struct attn_job {
    const struct kern_attn_args *a;
    int n;
    kern_attn_fn fn[OP_ATTENTION_MAX_SEQ];
    int64_t first[OP_ATTENTION_MAX_SEQ + 1]; /* first item of each; first[n]: total */
    float *scratch;
    size_t per_thread;
    atomic_long next;
};

static void attention_worker(void *arg, int ith, int nth)
{
    (void)nth;
    struct attn_job *j = arg;
    float *scratch = j->scratch + (size_t)ith * j->per_thread;
    /* later tokens see more keys: hand items out one at a time, each
     * sequence's heaviest first, so that the last ones to finish are short */
    for (;;) {
        long i = atomic_fetch_add_explicit(&j->next, 1, memory_order_relaxed);
        if (i >= j->first[j->n])
            return;
        int s = 0;
        while (i >= j->first[s + 1])
            s++;
        const int64_t n_items = j->first[s + 1] - j->first[s], k = i - j->first[s];
        j->fn[s](&j->a[s], n_items - 1 - k, n_items - k, scratch);
    }
}

void op_attention_n(struct pool *pool, const struct kern_attn_args *a, int n, float *scratch)
{
    for (int s0 = 0; s0 < n; s0 += OP_ATTENTION_MAX_SEQ) {
        struct attn_job j = {.a = a + s0, .n = n - s0 < OP_ATTENTION_MAX_SEQ ? n - s0 : OP_ATTENTION_MAX_SEQ,
                             .scratch = scratch, .per_thread = op_attention_scratch(a)};
        j.first[0] = 0;
        for (int s = 0; s < j.n; s++) {
            j.fn[s] = kern_attn_for(&j.a[s], kern_level());
            j.first[s + 1] = j.first[s] + kern_attn_items(&j.a[s]);
        }
        atomic_init(&j.next, 0);
        pool_run(pool, attention_worker, &j);
    }
}
