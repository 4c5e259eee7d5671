#include "engine/engine.h"

#include "base/pool.h"
#include "base/sys.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_MAX_CTX 4096
#define DEFAULT_BATCH 512

struct engine {
    struct model *model;
    struct tokenizer *tok;
    struct model_ctx *ctx;
    double t_load;
    int32_t *cached;   /* the tokens whose keys and values are in the context */
    size_t n_cached;   /* == model_ctx_pos */
};

int engine_open(const char *path, const struct engine_params *p, struct engine **out, pb_err *err)
{
    *out = NULL;
    double t0 = sys_now();
    struct engine *e = calloc(1, sizeof *e);
    if (!e)
        return pb_fail(err, PB_ENOMEM, "out of memory");
    int rc = model_load(path, &e->model, err);
    if (rc)
        goto fail;
    if ((rc = tok_load(model_gguf(e->model), &e->tok, err)))
        goto fail;
    const struct model_hparams *hp = model_hparams(e->model);
    if (tok_n_vocab(e->tok) > hp->n_vocab) {
        rc = pb_fail(err, PB_EFORMAT, "%s: the vocabulary has %" PRId32 " tokens but token_embd has %" PRId64 " rows",
                     path, tok_n_vocab(e->tok), hp->n_vocab);
        goto fail;
    }
    struct model_ctx_params cp = {
        .n_ctx = p->n_ctx,
        .n_batch = p->n_batch > 0 ? p->n_batch : DEFAULT_BATCH,
        .n_threads = p->n_threads > 0 ? p->n_threads : pool_cpu_count(),
        .kv_type = p->kv_type,
    };
    if (cp.n_ctx <= 0)
        cp.n_ctx = hp->n_ctx_train > 0 && hp->n_ctx_train < DEFAULT_MAX_CTX ? hp->n_ctx_train : DEFAULT_MAX_CTX;
    if ((rc = model_ctx_create(e->model, &cp, &e->ctx, err)))
        goto fail;
    e->cached = malloc((size_t)model_ctx_n_ctx(e->ctx) * sizeof *e->cached);
    if (!e->cached) {
        rc = pb_fail(err, PB_ENOMEM, "out of memory");
        goto fail;
    }
    e->t_load = sys_now() - t0;
    *out = e;
    return PB_OK;
fail:
    engine_free(e);
    return rc;
}

void engine_free(struct engine *e)
{
    if (!e)
        return;
    model_ctx_free(e->ctx);
    free(e->cached);
    tok_free(e->tok);
    model_free(e->model);
    free(e);
}

const struct model *engine_model(const struct engine *e) { return e->model; }
const struct tokenizer *engine_tokenizer(const struct engine *e) { return e->tok; }
struct model_ctx *engine_ctx(struct engine *e) { return e->ctx; }
double engine_load_seconds(const struct engine *e) { return e->t_load; }
int64_t engine_n_ctx(const struct engine *e) { return model_ctx_n_ctx(e->ctx); }

void engine_forget(struct engine *e)
{
    e->n_cached = 0;
    model_ctx_truncate(e->ctx, 0);
}

/* The k highest logits, highest first, ties to the lower id (insertion into
 * a short sorted list: k is small). */
static int top_k_logits(const float *logits, int32_t n, int k, int32_t *ids, float *vals)
{
    int have = 0;
    for (int32_t i = 0; i < n; i++) {
        float v = logits[i];
        if (have == k && !(v > vals[k - 1]))
            continue;
        int pos = have < k ? have++ : k - 1;
        while (pos > 0 && v > vals[pos - 1]) {
            vals[pos] = vals[pos - 1];
            ids[pos] = ids[pos - 1];
            pos--;
        }
        vals[pos] = v;
        ids[pos] = i;
    }
    return have;
}

int engine_generate(struct engine *e, const int32_t *prompt, size_t n_prompt, const struct gen_params *gp,
                    gen_callback cb, void *user, struct gen_stats *st, pb_err *err)
{
    const struct model_hparams *hp = model_hparams(e->model);
    const int32_t n_vocab = (int32_t)hp->n_vocab;
    memset(st, 0, sizeof *st);
    if (n_prompt == 0)
        return pb_fail(err, PB_EINVAL, "the prompt is empty");
    if ((int64_t)n_prompt > engine_n_ctx(e))
        return pb_fail(err, PB_ERANGE, "the prompt has %zu tokens but the context holds %" PRId64 " (use --ctx)",
                       n_prompt, engine_n_ctx(e));

    float *logits = malloc((size_t)n_vocab * sizeof *logits);
    int k = gp->top_k_report > 0 ? (gp->top_k_report < n_vocab ? gp->top_k_report : n_vocab) : 0;
    int32_t *top_ids = malloc(((size_t)k + 1) * sizeof *top_ids);
    float *top_vals = malloc(((size_t)k + 1) * sizeof *top_vals);
    size_t piece_cap = 256;
    char *piece = malloc(piece_cap);
    struct sampler *smp = NULL;
    int rc = PB_OK;
    if (!logits || !top_ids || !top_vals || !piece) {
        rc = pb_fail(err, PB_ENOMEM, "out of memory");
        goto done;
    }
    if ((rc = sampler_create(&gp->sampling, n_vocab, &smp, err)))
        goto done;
    for (size_t i = 0; i < n_prompt; i++)
        sampler_accept(smp, prompt[i]);

    /* reuse the cached prefix the prompt shares (a system prompt, the
     * earlier turns of a chat); at least the last token is evaluated, for
     * its logits */
    size_t keep = 0;
    while (keep < e->n_cached && keep + 1 < n_prompt && e->cached[keep] == prompt[keep])
        keep++;
    model_ctx_truncate(e->ctx, (int64_t)keep);
    e->n_cached = keep;
    double t0 = sys_now();
    rc = model_eval(e->ctx, prompt + keep, (int)(n_prompt - keep), logits, err);
    if (rc)
        goto done;
    memcpy(e->cached + keep, prompt + keep, (n_prompt - keep) * sizeof *prompt);
    e->n_cached = n_prompt;
    st->n_prompt = (int)n_prompt;
    st->n_reused = (int)keep;
    st->t_prompt = sys_now() - t0;

    t0 = sys_now();
    for (int i = 0;; i++) {
        if (gp->n_predict >= 0 && i >= gp->n_predict) {
            st->stop = GEN_STOP_LENGTH;
            break;
        }
        int n_top = k ? top_k_logits(logits, n_vocab, k, top_ids, top_vals) : 0;
        int32_t id = sampler_sample(smp, logits);
        sampler_accept(smp, id);
        if (tok_is_eog(e->tok, id) && !gp->ignore_eog) {
            st->stop = GEN_STOP_EOG;
            break;
        }
        size_t plen = tok_piece(e->tok, id, false, piece, piece_cap);
        if (plen > piece_cap) { /* rare: a token longer than any so far */
            char *np = realloc(piece, plen);
            if (!np) {
                rc = pb_fail(err, PB_ENOMEM, "out of memory");
                break;
            }
            piece = np;
            piece_cap = plen;
            tok_piece(e->tok, id, false, piece, piece_cap);
        }
        struct gen_step step = {i, id, piece, plen, logits, n_vocab, top_ids, top_vals, n_top};
        st->n_gen++;
        if (cb && cb(user, &step)) {
            st->stop = GEN_STOP_CALLER;
            break;
        }
        if (gp->n_predict >= 0 && i + 1 >= gp->n_predict) {
            st->stop = GEN_STOP_LENGTH;
            break;
        }
        if (model_ctx_pos(e->ctx) >= engine_n_ctx(e)) {
            st->stop = GEN_STOP_CONTEXT;
            break;
        }
        if ((rc = model_eval(e->ctx, &id, 1, logits, err)))
            break;
        e->cached[e->n_cached++] = id;
    }
    st->t_gen = sys_now() - t0;
done:
    sampler_free(smp);
    free(piece);
    free(logits);
    free(top_ids);
    free(top_vals);
    return rc;
}
