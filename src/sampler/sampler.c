#include "sampler/sampler.h"

#include "base/rng.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

struct cand {
    int32_t id;
    float logit;
    float p;
};

struct sampler {
    struct sampler_params p;
    int32_t n_vocab;
    struct rng rng;
    struct cand *cand;
    int32_t *hist; /* ring buffer of the last repeat_last_n tokens */
    int32_t hist_n, hist_pos;
    int32_t *seen; /* per-id count while applying the penalties */
};

struct sampler_params sampler_defaults(void)
{
    struct sampler_params p = {
        .temp = 0.8f,
        .top_k = 40,
        .top_p = 0.95f,
        .min_p = 0.05f,
        .repeat_penalty = 1.0f,
        .repeat_last_n = 64,
        .seed = 0,
    };
    return p;
}

int sampler_create(const struct sampler_params *p, int32_t n_vocab, struct sampler **out, pb_err *err)
{
    *out = NULL;
    if (n_vocab <= 0)
        return pb_fail(err, PB_EINVAL, "sampler needs a vocabulary");
    if (!(p->repeat_penalty > 0) || !isfinite(p->temp) || p->repeat_last_n < 0 || !isfinite(p->presence_penalty) ||
        !isfinite(p->frequency_penalty))
        return pb_fail(err, PB_EINVAL, "bad sampler parameters");
    struct sampler *s = calloc(1, sizeof *s);
    if (!s)
        return pb_fail(err, PB_ENOMEM, "out of memory");
    s->p = *p;
    s->n_vocab = n_vocab;
    rng_seed(&s->rng, p->seed);
    s->cand = malloc((size_t)n_vocab * sizeof *s->cand);
    s->seen = calloc((size_t)n_vocab, sizeof *s->seen);
    s->hist = malloc(((size_t)p->repeat_last_n + 1) * sizeof *s->hist);
    if (!s->cand || !s->seen || !s->hist) {
        sampler_free(s);
        return pb_fail(err, PB_ENOMEM, "out of memory for the sampler");
    }
    *out = s;
    return PB_OK;
}

void sampler_free(struct sampler *s)
{
    if (!s)
        return;
    free(s->cand);
    free(s->seen);
    free(s->hist);
    free(s);
}

void sampler_accept(struct sampler *s, int32_t id)
{
    if (s->p.repeat_last_n == 0)
        return;
    s->hist[s->hist_pos] = id;
    s->hist_pos = (s->hist_pos + 1) % s->p.repeat_last_n;
    if (s->hist_n < s->p.repeat_last_n)
        s->hist_n++;
}

void sampler_reset(struct sampler *s)
{
    s->hist_n = 0;
    s->hist_pos = 0;
}

int32_t sampler_argmax(const float *logits, int32_t n)
{
    int32_t best = 0;
    for (int32_t i = 1; i < n; i++)
        if (logits[i] > logits[best])
            best = i;
    return best;
}

/* The lowest allowed id: the choice when no allowed token has any
 * probability left. */
static int32_t first_allowed(int32_t n, const uint8_t *allowed)
{
    for (int32_t i = 0; i < n; i++)
        if (!allowed || allowed[i])
            return i;
    return -1;
}

/* Descending by logit, ties by ascending id; NaN (from a broken model)
 * sorts last, so the order stays total. */
static int cmp_cand(const void *a, const void *b)
{
    const struct cand *x = a, *y = b;
    bool xn = x->logit != x->logit, yn = y->logit != y->logit;
    if (xn != yn)
        return xn ? 1 : -1;
    if (!xn && x->logit != y->logit)
        return x->logit > y->logit ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

/* Moves the k best candidates to the front, sorted (k < n). A min-heap of
 * the best k seen so far: O(n log k) instead of sorting the vocabulary. */
static void top_k_front(struct cand *c, int32_t n, int32_t k)
{
    /* heap root = worst of the kept k */
    for (int32_t i = 0; i < n; i++) {
        struct cand x = c[i];
        int32_t pos;
        if (i < k) {
            pos = i;
            while (pos > 0 && cmp_cand(&c[(pos - 1) / 2], &x) < 0) {
                c[pos] = c[(pos - 1) / 2];
                pos = (pos - 1) / 2;
            }
            c[pos] = x;
            continue;
        }
        if (cmp_cand(&x, &c[0]) >= 0)
            continue; /* not better than the worst kept */
        pos = 0;
        for (;;) {
            int32_t l = 2 * pos + 1, r = l + 1, w = pos;
            const struct cand *wv = &x;
            if (l < k && cmp_cand(&c[l], wv) > 0) {
                w = l;
                wv = &c[l];
            }
            if (r < k && cmp_cand(&c[r], wv) > 0)
                w = r;
            if (w == pos)
                break;
            c[pos] = c[w];
            pos = w;
        }
        c[pos] = x;
    }
    qsort(c, (size_t)k, sizeof *c, cmp_cand);
}

/* Softmax over c[0..n) (sorted descending) into p. */
static void softmax_cands(struct cand *c, int32_t n, float temp)
{
    double sum = 0;
    for (int32_t i = 0; i < n; i++) {
        c[i].p = expf((c[i].logit - c[0].logit) / temp);
        sum += c[i].p;
    }
    for (int32_t i = 0; i < n; i++)
        c[i].p = (float)(c[i].p / sum);
}

int32_t sampler_sample(struct sampler *s, const float *logits)
{
    return sampler_sample_allowed(s, logits, NULL);
}

/* The penalties over the window of recent tokens, on the candidates
 * (still indexed by id). */
static void apply_penalties(struct sampler *s, struct cand *c, int32_t n)
{
    const struct sampler_params *p = &s->p;
    if (p->repeat_penalty == 1.0f && p->presence_penalty == 0.0f && p->frequency_penalty == 0.0f)
        return;
    for (int32_t i = 0; i < s->hist_n; i++)
        if (s->hist[i] >= 0 && s->hist[i] < n)
            s->seen[s->hist[i]]++;
    for (int32_t i = 0; i < s->hist_n; i++) {
        int32_t id = s->hist[i];
        if (id < 0 || id >= n || s->seen[id] == 0)
            continue;
        float l = c[id].logit;
        if (p->repeat_penalty != 1.0f)
            l = l > 0 ? l / p->repeat_penalty : l * p->repeat_penalty;
        l -= (float)s->seen[id] * p->frequency_penalty + p->presence_penalty;
        c[id].logit = l;
        s->seen[id] = 0; /* once per id */
    }
}

/* The candidates from the logits: a NaN (broken model) is never chosen,
 * the penalties applied, the tokens a mask refuses at -inf (a penalty
 * cannot revive them). False when the mask allows none. */
static bool load_cands(struct sampler *s, const float *logits, const uint8_t *allowed)
{
    struct cand *c = s->cand;
    const int32_t n = s->n_vocab;
    bool any = false;
    for (int32_t i = 0; i < n; i++) {
        bool ok = !allowed || allowed[i];
        any |= ok;
        c[i] = (struct cand){i, ok && logits[i] == logits[i] ? logits[i] : -INFINITY, 0};
    }
    if (!any)
        return false;
    apply_penalties(s, c, n);
    if (allowed)
        for (int32_t i = 0; i < n; i++)
            if (!allowed[i])
                c[i].logit = -INFINITY;
    return true;
}

/* The candidate (by id order) where the running sum of c[].p passes r. */
static int32_t draw_cands(const struct cand *c, int32_t n, double r)
{
    double cum = 0;
    int32_t last = 0;
    for (int32_t i = 0; i < n; i++) {
        if (c[i].p <= 0)
            continue;
        cum += c[i].p;
        last = i;
        if (r < cum)
            return i;
    }
    return last;
}

int32_t sampler_sample_allowed(struct sampler *s, const float *logits, const uint8_t *allowed)
{
    struct cand *c = s->cand;
    int32_t n = s->n_vocab;
    if (!load_cands(s, logits, allowed))
        return -1;

    if (s->p.temp <= 0) {
        int32_t best = -1;
        for (int32_t i = 0; i < n; i++)
            if ((!allowed || allowed[i]) && (best < 0 || c[i].logit > c[best].logit))
                best = i;
        return best;
    }
    if (s->p.top_k <= 0 && s->p.top_p >= 1.0f && s->p.min_p <= 0) {
        /* plain temperature sampling: no order needed, one pass */
        float mx = -INFINITY;
        for (int32_t i = 0; i < n; i++)
            mx = c[i].logit > mx ? c[i].logit : mx;
        if (!(mx > -INFINITY))
            return first_allowed(n, allowed);
        double sum = 0;
        for (int32_t i = 0; i < n; i++)
            sum += (c[i].p = expf((c[i].logit - mx) / s->p.temp));
        return draw_cands(c, n, rng_uniform(&s->rng) * sum);
    }

    if (s->p.top_k > 0 && s->p.top_k < n) {
        top_k_front(c, n, s->p.top_k);
        n = s->p.top_k;
    } else {
        qsort(c, (size_t)n, sizeof *c, cmp_cand);
    }
    if (!(c[0].logit > -INFINITY)) /* nothing has any probability: avoid inf - inf */
        return allowed ? first_allowed(s->n_vocab, allowed) : c[0].id;
    if (s->p.top_p < 1.0f) {
        softmax_cands(c, n, 1.0f);
        double cum = 0;
        for (int32_t i = 0; i < n; i++) {
            cum += c[i].p;
            if (cum >= s->p.top_p) {
                n = i + 1;
                break;
            }
        }
    }
    if (s->p.min_p > 0) {
        softmax_cands(c, n, 1.0f);
        float cut = s->p.min_p * c[0].p;
        int32_t keep = 1;
        while (keep < n && c[keep].p >= cut)
            keep++;
        n = keep;
    }
    softmax_cands(c, n, s->p.temp);
    float r = rng_uniform(&s->rng);
    double cum = 0;
    for (int32_t i = 0; i < n; i++) {
        cum += c[i].p;
        if (r < cum)
            return c[i].id;
    }
    return c[n - 1].id;
}

bool sampler_can_check(const struct sampler_params *p)
{
    return p->temp <= 0 || (p->top_k <= 0 && p->top_p >= 1.0f && p->min_p <= 0);
}

int32_t sampler_sample_checked(struct sampler *s, const float *logits, int tries, bool (*take)(void *user, int32_t id),
                               void *user)
{
    if (!sampler_can_check(&s->p) || tries < 1)
        return -1;
    struct cand *c = s->cand;
    const int32_t n = s->n_vocab;
    load_cands(s, logits, NULL);
    if (s->p.temp <= 0) {
        /* the best first (as the greedy pass picks it); after a refusal
         * the next best in order: ties go to the lower id in both */
        int32_t best = 0;
        for (int32_t i = 1; i < n; i++)
            if (c[i].logit > c[best].logit)
                best = i;
        if (take(user, best))
            return best;
        const int32_t k = tries < n ? tries : n;
        if (k < 2)
            return -1;
        top_k_front(c, n, k);
        for (int32_t i = 1; i < k; i++)
            if (take(user, c[i].id))
                return c[i].id;
        return -1;
    }
    float mx = -INFINITY;
    for (int32_t i = 0; i < n; i++)
        mx = c[i].logit > mx ? c[i].logit : mx;
    if (!(mx > -INFINITY)) /* nothing has any probability: the mask decides */
        return -1;
    double sum = 0;
    for (int32_t i = 0; i < n; i++)
        sum += (c[i].p = expf((c[i].logit - mx) / s->p.temp));
    for (int t = 0; t < tries; t++) {
        const int32_t id = draw_cands(c, n, rng_uniform(&s->rng) * sum);
        if (take(user, id))
            return id;
    }
    return -1;
}
