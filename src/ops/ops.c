#include "ops/ops.h"

#include "kernels/kernels.h"

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

void op_rope(float *x, int n_head, int head_dim, int64_t pos, const struct rope_params *rp)
{
    const int half = rp->n_rot / 2;
    /* theta_i = pos * base^(-2i/n_rot), built by repeated multiplication
     * in float as the reference implementation does, so that angles agree
     * to the last bit at every position */
    const float theta_scale = powf(rp->base, -2.0f / (float)rp->n_rot);
    float theta = (float)pos;
    for (int i = 0; i < half; i++, theta *= theta_scale) {
        float angle = (rp->freq_factors ? theta / rp->freq_factors[i] : theta) * rp->freq_scale;
        float c = cosf(angle), s = sinf(angle);
        int a = rp->style == ROPE_NORM ? 2 * i : i;
        int b = rp->style == ROPE_NORM ? 2 * i + 1 : i + half;
        for (int h = 0; h < n_head; h++) {
            float *v = x + (size_t)h * head_dim;
            float x0 = v[a], x1 = v[b];
            v[a] = x0 * c - x1 * s;
            v[b] = x0 * s + x1 * c;
        }
    }
}

void op_swiglu(float *g, const float *u, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        g[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

void op_add(float *x, const float *y, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        x[i] += y[i];
}

void op_softmax(float *x, int64_t n)
{
    float max = -INFINITY;
    for (int64_t i = 0; i < n; i++)
        if (x[i] > max)
            max = x[i];
    double sum = 0;
    for (int64_t i = 0; i < n; i++) {
        x[i] = expf(x[i] - max);
        sum += x[i];
    }
    float inv = (float)(1.0 / sum);
    for (int64_t i = 0; i < n; i++)
        x[i] *= inv;
}

void op_get_row(const struct pb_tensor *t, int64_t row, float *out)
{
    const struct pb_type_traits *tr = pb_type_get(t->type);
    tr->to_float((const uint8_t *)t->data + (size_t)row * t->row_bytes, out, t->ne[0]);
}

/* ---- matmul ---- */

size_t op_matmul_scratch(const struct pb_tensor *w, int n_tok)
{
    const struct kern_dot *k = kern_dot_for(w->type);
    if (!k)
        return 0;
    return pb_row_size(k->act_type, w->ne[0]) * (size_t)n_tok;
}

struct matmul_job {
    const struct pb_tensor *w;
    kern_dot_fn dot;
    const uint8_t *xq; /* activations converted to the activation type */
    size_t xq_row;
    int n_tok;
    float *y;
};

static void matmul_worker(void *arg, int ith, int nth)
{
    const struct matmul_job *j = arg;
    const int64_t n_in = j->w->ne[0], n_out = j->w->ne[1];
    long r0, r1;
    pool_range(n_out, ith, nth, &r0, &r1);
    /* weight row outer, tokens inner: each row is read from memory once
     * per call and reused from cache for every token */
    for (long r = r0; r < r1; r++) {
        const void *wr = (const uint8_t *)j->w->data + (size_t)r * j->w->row_bytes;
        for (int t = 0; t < j->n_tok; t++)
            j->y[(size_t)t * n_out + r] = j->dot(n_in, wr, j->xq + (size_t)t * j->xq_row);
    }
}

int op_matmul(struct pool *pool, const struct pb_tensor *w, const float *x, int n_tok, float *y, void *scratch,
              pb_err *err)
{
    const struct kern_dot *k = kern_dot_for(w->type);
    if (!k)
        return pb_fail(err, PB_EUNSUPPORTED, "no matrix kernel for %s weights (tensor '%s')", pb_type_name(w->type),
                       w->name);
    const struct pb_type_traits *at = pb_type_get(k->act_type);
    struct matmul_job j = {w, k->dot, NULL, pb_row_size(k->act_type, w->ne[0]), n_tok, y};
    if (k->act_type == PB_TYPE_F32) {
        j.xq = (const uint8_t *)x;
    } else {
        for (int t = 0; t < n_tok; t++)
            at->from_float(x + (size_t)t * w->ne[0], (uint8_t *)scratch + (size_t)t * j.xq_row, w->ne[0]);
        j.xq = scratch;
    }
    pool_run(pool, matmul_worker, &j);
    return PB_OK;
}

/* ---- attention ---- */

static void attention_worker(void *arg, int ith, int nth)
{
    const struct attn_args *a = arg;
    const int hd = a->head_dim;
    const int group = a->n_head / a->n_head_kv;
    const size_t q_stride = (size_t)a->n_head * hd, kv_stride = (size_t)a->n_head_kv * hd;
    float *att = a->scratch + (size_t)ith * (size_t)(a->pos0 + a->n_tok);
    long w0, w1;
    pool_range((long)a->n_tok * a->n_head, ith, nth, &w0, &w1);
    for (long wi = w0; wi < w1; wi++) {
        int t = (int)(wi / a->n_head), h = (int)(wi % a->n_head);
        int kvh = h / group;
        int64_t n_keys = a->pos0 + t + 1; /* causal: keys up to this token */
        const float *q = a->q + (size_t)t * q_stride + (size_t)h * hd;
        for (int64_t p = 0; p < n_keys; p++) {
            const float *k = a->k + (size_t)p * kv_stride + (size_t)kvh * hd;
            float s = 0;
            for (int d = 0; d < hd; d++)
                s += q[d] * k[d];
            att[p] = s * a->scale;
        }
        op_softmax(att, n_keys);
        float *out = a->out + (size_t)t * q_stride + (size_t)h * hd;
        memset(out, 0, (size_t)hd * sizeof *out);
        for (int64_t p = 0; p < n_keys; p++) {
            const float *v = a->v + (size_t)p * kv_stride + (size_t)kvh * hd;
            float wgt = att[p];
            for (int d = 0; d < hd; d++)
                out[d] += wgt * v[d];
        }
    }
}

void op_attention(struct pool *pool, const struct attn_args *a)
{
    pool_run(pool, attention_worker, (void *)a);
}
