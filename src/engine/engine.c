/* The engine (plumb/engine.h): one owner of a loaded model, its
 * tokenizer, chat format and generation loop. */
#define _GNU_SOURCE
#include "plumb/engine.h"
#include "base/err.h"

#include "base/pool.h"
#include "base/sys.h"
#include "chat/chat.h"
#include "engine/sched.h"
#include "kernels/kernels.h"
#include "model/model.h"
#include "quant/ftype.h"
#include "tokenizer/tokenizer.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>


struct engine_threads {
    struct pool *pool;
};

struct engine {
    struct model *model;
    struct tokenizer *tok;
    struct chat *chat;
    pthread_mutex_t chat_mu; /* a chat format renders one conversation at a time */
    bool chat_mu_init;
    struct engine_threads *threads, *own_threads;
    struct sched *sched;
    struct engine_params p;
    struct engine_info info;
    char chat_notice[600];
};

/* ---- threads ---- */

int engine_cpu_count(void)
{
    return pool_cpu_count();
}

int engine_threads_create(int n_threads, struct engine_threads **out, pb_err *err)
{
    *out = NULL;
    struct engine_threads *t = calloc(1, sizeof *t);
    if (!t)
        return pb_fail(err, PB_ENOMEM, "out of memory");
    int rc = pool_create(n_threads > 0 ? n_threads : pool_cpu_count(), &t->pool, err);
    if (rc) {
        free(t);
        return rc;
    }
    *out = t;
    return PB_OK;
}

bool engine_threads_advice(int n_threads, char *msg, size_t size)
{
    const int cpus = pool_cpu_count();
    if (n_threads <= cpus || cpus < 1)
        return false;
    snprintf(msg, size, "%d threads on %d CPU%s: the extra threads run by turns, and each of the hundreds of matrix "
             "products per token waits for the last of them, so generation and prompts run about %dx slower or "
             "worse; use %d threads (or leave the setting out: every CPU)",
             n_threads, cpus, cpus == 1 ? "" : "s", (n_threads + cpus - 1) / cpus, cpus);
    return true;
}

bool engine_ctx_advice(int64_t n_ctx, int64_t n_ctx_train, char *msg, size_t size)
{
    if (n_ctx_train <= 0 || n_ctx <= n_ctx_train)
        return false;
    snprintf(msg, size, "context %" PRId64 " exceeds the model's training context %" PRId64 ": positions past it "
             "were never trained and output may degrade there; use a context of at most %" PRId64,
             n_ctx, n_ctx_train, n_ctx_train);
    return true;
}

void engine_threads_free(struct engine_threads *t)
{
    if (!t)
        return;
    pool_free(t->pool);
    free(t);
}

int engine_threads_count(const struct engine_threads *t)
{
    return pool_size(t->pool);
}

const char *engine_kernels(void)
{
    return kern_level_name(kern_level());
}

const char *engine_kernels_env_ignored(void)
{
    return kern_level_ignored_env();
}

/* ---- parameters ---- */

struct engine_params engine_defaults(void)
{
    return (struct engine_params){
        .n_slots = 1,
        .n_batch = ENGINE_DEFAULT_BATCH,
        .kv_type = PB_KV_F16,
        .max_queue = ENGINE_DEFAULT_QUEUE,
        .prefill_chunk = ENGINE_DEFAULT_PREFILL_CHUNK,
        .step_target_s = ENGINE_DEFAULT_STEP_MS / 1000.0,
    };
}

struct engine_request_params engine_request_defaults(void)
{
    return (struct engine_request_params){.sampling = sampler_defaults(), .n_predict = -1};
}

const char *engine_chat_formats(void)
{
    return chat_format_names();
}

bool engine_chat_format_known(const char *name)
{
    return chat_format_known(name);
}

const char *engine_finish_name(enum engine_finish f)
{
    switch (f) {
    case ENGINE_FINISH_EOG: return "eog";
    case ENGINE_FINISH_LENGTH: return "length";
    case ENGINE_FINISH_CONTEXT: return "context";
    case ENGINE_FINISH_STOP: return "stop";
    case ENGINE_FINISH_CALLER: return "caller";
    case ENGINE_FINISH_CANCELLED: return "cancelled";
    case ENGINE_FINISH_ERROR: return "error";
    }
    return "unknown";
}

/* The context per slot p asks for, given the model's training context. */
static int64_t context_of(const struct engine_params *p, int64_t n_ctx_train)
{
    if (p->n_ctx > 0)
        return p->n_ctx;
    return n_ctx_train > 0 && n_ctx_train < ENGINE_DEFAULT_MAX_CTX ? n_ctx_train : ENGINE_DEFAULT_MAX_CTX;
}

static int check_params(const struct engine_params *p, pb_err *err)
{
    if (p->n_slots < 1 || p->n_slots > ENGINE_MAX_SLOTS)
        return pb_fail(err, PB_EINVAL, "%d parallel slots: 1..%d", p->n_slots, ENGINE_MAX_SLOTS);
    if (p->n_batch < 1 || p->n_batch > (1 << 16))
        return pb_fail(err, PB_EINVAL, "batch size %d out of range 1..65536", p->n_batch);
    if (p->n_ctx < 0 || p->n_ctx > (1 << 24))
        return pb_fail(err, PB_EINVAL, "context size %" PRId64 " out of range 1..%d", p->n_ctx, 1 << 24);
    if ((unsigned)p->kv_type > PB_KV_Q8_0)
        return pb_fail(err, PB_EINVAL, "unknown KV cache type %d", (int)p->kv_type);
    if (p->max_queue < 0 || p->prefill_chunk < 1 || !(p->step_target_s > 0))
        return pb_fail(err, PB_EINVAL, "queue, prefill chunk and step time out of range");
    if (p->chat_format && !chat_format_known(p->chat_format))
        return pb_fail(err, PB_EINVAL, "unknown chat format '%s' (one of %s)", p->chat_format, chat_format_names());
    return PB_OK;
}

static struct model_ctx_params ctx_params(const struct engine_params *p, int64_t n_ctx, int n_threads)
{
    return (struct model_ctx_params){
        .n_ctx = n_ctx,
        .n_batch = p->n_batch < p->n_slots ? p->n_slots : p->n_batch,
        .n_threads = n_threads,
        .kv_type = p->kv_type,
        .n_seq = p->n_slots,
    };
}

static int threads_of(const struct engine_params *p)
{
    return p->threads ? engine_threads_count(p->threads) : p->n_threads > 0 ? p->n_threads : pool_cpu_count();
}

/* The engine's figures from the model's: the scheduler's buffers join
 * the compute part; its copy of the vocabulary's texts (JSON mode) is
 * counted as a quarter of the tokenizer's bytes, the share its own copy
 * of those texts takes. */
static void fill_memory(const struct model_mem *mm, const struct model_hparams *hp, const struct engine_params *p,
                        uint64_t tokenizer, int64_t n_ctx, struct engine_memory *out)
{
    const int n_batch = p->n_batch < p->n_slots ? p->n_slots : p->n_batch;
    out->weights = mm->weights + mm->vectors;
    out->kv = mm->kv;
    out->compute = mm->compute + (uint64_t)p->n_slots * sched_mem_per_slot(hp->n_vocab) +
                   sched_mem_fixed(hp->n_vocab, n_batch, tokenizer / 4);
    out->per_slot = mm->kv / (uint64_t)p->n_slots + sched_mem_per_slot(hp->n_vocab) + (uint64_t)n_ctx * 4;
    out->runtime = tokenizer + ENGINE_PROCESS_BYTES;
    out->total = out->weights + out->kv + out->compute + out->runtime;
    out->available = sys_mem_available();
    out->n_ctx = n_ctx;
    out->n_ctx_train = hp->n_ctx_train;
}

/* The estimate for the model of file f (left open), whose tokenizer is
 * tok. */
static int estimate_file(const struct gguf_file *f, const struct tokenizer *tok, const struct engine_params *p,
                         struct engine_memory *out, pb_err *err)
{
    memset(out, 0, sizeof *out);
    struct model_hparams hp;
    struct model_mem mm;
    /* the shape first: the context depends on the training context */
    int rc = model_hparams_read(f, &hp, err);
    if (rc)
        return rc;
    const int64_t n_ctx = context_of(p, hp.n_ctx_train);
    struct model_ctx_params cp = ctx_params(p, n_ctx, threads_of(p));
    if ((rc = model_mem_estimate(f, &cp, NULL, &mm, err)))
        return rc;
    fill_memory(&mm, &hp, p, tok_mem_bytes(tok), n_ctx, out);
    return PB_OK;
}

/* A vocabulary's tokenizer without the vocabulary at hand: entries, their
 * texts, the index and, for byte-level BPE, the merges. Measured with
 * tok_mem_bytes on the vocabularies in the test data: Llama 3 (128,256
 * tokens, 280,147 merges) 17.3 MB, 134 bytes a token; GPT-2 (50,257) 78;
 * Llama 2's SentencePiece (32,000, no merges) 40. Today's models use
 * large byte-level BPE vocabularies: the Llama 3 figure. */
static uint64_t tokenizer_guess(int64_t n_vocab)
{
    return (uint64_t)n_vocab * 135;
}

int engine_estimate_shape(const struct engine_shape *s, const struct engine_params *p, struct engine_memory *out,
                          pb_err *err)
{
    memset(out, 0, sizeof *out);
    int rc = check_params(p, err);
    if (rc)
        return rc;
    const struct model_hparams hp = {
        .n_vocab = s->n_vocab,
        .n_ctx_train = s->n_ctx_train,
        .n_embd = s->n_embd,
        .n_layer = s->n_layer,
        .n_head = s->n_head,
        .n_head_kv = s->n_head_kv,
        .head_dim = s->head_dim,
        .n_ff = s->n_ff,
        .n_swa = s->n_swa,
        .swa_pattern = s->swa_pattern,
    };
    const int64_t n_ctx = context_of(p, hp.n_ctx_train);
    const struct model_ctx_params cp = ctx_params(p, n_ctx, threads_of(p));
    struct model_mem mm;
    /* activations: floats for float weights, else 8-bit blocks (Q8_K: 292 bytes per 256 values) */
    if ((rc = model_mem_shape(&hp, s->weight_bytes, s->float_weights ? 4.0 : 292.0 / 256, &cp, &mm, err)))
        return rc;
    fill_memory(&mm, &hp, p, tokenizer_guess(s->n_vocab), n_ctx, out);
    return PB_OK;
}

int engine_estimate(const char *path, const struct engine_params *p, struct engine_memory *out, pb_err *err)
{
    memset(out, 0, sizeof *out);
    int rc = check_params(p, err);
    if (rc)
        return rc;
    struct gguf_file *f;
    struct tokenizer *tok = NULL;
    if ((rc = gguf_open(path, &f, err)))
        return rc;
    if ((rc = tok_load(f, &tok, err)) == PB_OK)
        rc = estimate_file(f, tok, p, out, err);
    tok_free(tok);
    gguf_close(f);
    return rc;
}

/* ---- opening ---- */

static void describe(struct engine *e)
{
    struct engine_info *in = &e->info;
    const struct model_hparams *hp = model_hparams(e->model);
    snprintf(in->arch, sizeof in->arch, "%s", hp->arch);
    in->n_ctx_train = hp->n_ctx_train;
    in->n_vocab = (int32_t)hp->n_vocab;
    in->n_slots = e->p.n_slots;
    in->kv_type = e->p.kv_type;
    in->chat_format = chat_name(e->chat);
    in->chat_notice = e->chat_notice;
    in->kernels = kern_level_name(kern_level());
    in->weight_bytes = model_weight_bytes(e->model);
    const struct gguf_file *f = model_gguf(e->model);
    for (uint64_t i = 0; i < gguf_n_tensors(f); i++)
        in->n_params += (uint64_t)gguf_tensor_nelements(gguf_tensor(f, i));
    int64_t ft;
    if (gguf_get_int(f, "general.file_type", &ft, NULL) == 1 && pb_ftype_name(ft))
        snprintf(in->file_type, sizeof in->file_type, "%s", pb_ftype_name(ft));
}

/* Where a model comes from: a file, or an image in a descriptor. */
struct source {
    const char *path; /* the file, or the image's name */
    int fd;           /* -1: the file */
    bool discardable;
};

static int source_open(const struct source *src, struct gguf_file **f, pb_err *err)
{
    return src->fd < 0 ? gguf_open(src->path, f, err) : gguf_open_fd(src->fd, src->path, false, f, err);
}

static int source_load(const struct source *src, struct pool *pool, struct model **m, pb_err *err)
{
    return src->fd < 0 ? model_load(src->path, pool, m, err)
                       : model_load_fd(src->fd, src->path, src->discardable, pool, m, err);
}

static int open_source(const struct source *src, const struct engine_params *p, struct engine **out, pb_err *err)
{
    *out = NULL;
    const double t0 = sys_now();
    const char *path = src->path;
    int rc = check_params(p, err);
    if (rc)
        return rc;
    struct engine *e = calloc(1, sizeof *e);
    if (!e)
        return pb_fail(err, PB_ENOMEM, "out of memory");
    e->p = *p;
    e->threads = p->threads;
    if (!e->threads) {
        if ((rc = engine_threads_create(p->n_threads, &e->own_threads, err)))
            goto fail;
        e->threads = e->own_threads;
    }
    /* the tokenizer, and the estimate, before the weights take memory: a
     * model that cannot fit is refused before it pushes others out */
    struct engine_memory mem = {0};
    struct gguf_file *f;
    if ((rc = source_open(src, &f, err)))
        goto fail;
    rc = tok_load(f, &e->tok, err);
    if (rc == PB_OK && !p->ignore_memory)
        rc = estimate_file(f, e->tok, p, &mem, err);
    gguf_close(f);
    if (rc)
        goto fail;
    if (!p->ignore_memory && mem.available && mem.total > mem.available) {
        rc = pb_fail(err, PB_ENOMEM,
                     "%s needs about %.2f GiB (weights %.2f, KV cache %.2f for %d x %" PRId64 " tokens, buffers %.2f, "
                     "runtime %.2f) but %.2f GiB are available; use a smaller context or fewer slots",
                     path, mem.total / 1073741824.0, mem.weights / 1073741824.0, mem.kv / 1073741824.0, p->n_slots,
                     mem.n_ctx, mem.compute / 1073741824.0, mem.runtime / 1073741824.0, mem.available / 1073741824.0);
        goto fail;
    }
    if ((rc = source_load(src, e->threads->pool, &e->model, err)))
        goto fail;
    const struct model_hparams *hp = model_hparams(e->model);
    if (tok_n_vocab(e->tok) > hp->n_vocab) {
        rc = pb_fail(err, PB_EFORMAT, "%s: the vocabulary has %" PRId32 " tokens but token_embd has %" PRId64 " rows",
                     path, tok_n_vocab(e->tok), hp->n_vocab);
        goto fail;
    }
    if ((rc = chat_open(model_gguf(e->model), e->tok, p->chat_format, &e->chat, e->chat_notice,
                        sizeof e->chat_notice, err)))
        goto fail;
    pthread_mutex_init(&e->chat_mu, NULL);
    e->chat_mu_init = true;
    const int64_t n_ctx = context_of(p, hp->n_ctx_train);
    const struct model_ctx_params cp = ctx_params(p, n_ctx, engine_threads_count(e->threads));
    struct sched_params sp = {
        .n_slots = p->n_slots,
        .n_ctx = n_ctx,
        .n_batch = cp.n_batch,
        .kv_type = p->kv_type,
        .max_queue = p->max_queue,
        .prefill_chunk = p->prefill_chunk,
        .step_target_s = p->step_target_s,
        .pool = e->threads->pool,
    };
    if ((rc = sched_create(e->model, e->tok, &sp, &e->sched, err)))
        goto fail;
    describe(e);
    e->info.n_ctx = n_ctx;
    e->info.n_batch = cp.n_batch;
    e->info.n_threads = engine_threads_count(e->threads);
    struct model_mem mm;
    if ((rc = model_mem(e->model, &cp, &mm, err)))
        goto fail;
    fill_memory(&mm, hp, p, tok_mem_bytes(e->tok), n_ctx, &e->info.mem);
    e->info.load_s = sys_now() - t0;
    *out = e;
    return PB_OK;
fail:
    engine_close(e);
    return rc;
}

int engine_open(const char *path, const struct engine_params *p, struct engine **out, pb_err *err)
{
    const struct source src = {.path = path, .fd = -1};
    return open_source(&src, p, out, err);
}

int engine_open_fd(int fd, const char *name, bool discardable, const struct engine_params *p, struct engine **out,
                   pb_err *err)
{
    const struct source src = {.path = name, .fd = fd, .discardable = discardable};
    return open_source(&src, p, out, err);
}

void engine_close(struct engine *e)
{
    if (!e)
        return;
    sched_free(e->sched);
    chat_free(e->chat);
    if (e->chat_mu_init)
        pthread_mutex_destroy(&e->chat_mu);
    tok_free(e->tok);
    model_free(e->model);
    engine_threads_free(e->own_threads);
    free(e);
}

void engine_get_info(const struct engine *e, struct engine_info *out)
{
    *out = e->info;
}

const struct tokenizer *engine_tokenizer(const struct engine *e)
{
    return e->tok;
}

int engine_chat_prompt(struct engine *e, const json_t *messages, const struct engine_chat_opts *opts, int32_t **ids,
                       size_t *n_ids, struct engine_answer_start *start, pb_err *err)
{
    /* the template always sees its switches: left undefined, some close
     * the thinking block (DeepSeek-R1's) */
    const struct chat_opts co = {opts && opts->no_thinking, opts ? opts->tools : NULL,
                                 opts ? opts->reasoning_effort : NULL};
    struct chat_start cs;
    pthread_mutex_lock(&e->chat_mu);
    int rc = chat_tokenize(e->chat, e->tok, messages, true, &co, ids, n_ids, &cs, err);
    pthread_mutex_unlock(&e->chat_mu);
    if (rc == PB_OK && start) {
        start->style = cs.style == CHAT_REASONING_THINK     ? ENGINE_REASONING_THINK
                       : cs.style == CHAT_REASONING_HARMONY ? ENGINE_REASONING_HARMONY
                                                            : ENGINE_REASONING_NONE;
        start->in_reasoning = cs.in_reasoning;
    }
    return rc;
}

/* ---- embeddings ---- */

int64_t engine_embed_dim(const struct engine *e)
{
    return model_hparams(e->model)->n_embd;
}

bool engine_is_encoder(const struct engine *e)
{
    return !model_hparams(e->model)->causal;
}

const char *engine_pooling_name(const struct engine *e, enum engine_pooling p)
{
    enum model_pooling mp = p == ENGINE_POOL_MEAN   ? MODEL_POOL_MEAN
                            : p == ENGINE_POOL_CLS  ? MODEL_POOL_CLS
                            : p == ENGINE_POOL_LAST ? MODEL_POOL_LAST
                                                    : model_hparams(e->model)->pooling;
    return mp == MODEL_POOL_CLS ? "cls" : mp == MODEL_POOL_LAST ? "last" : "mean";
}

int engine_embed(struct engine *e, const int32_t *const *toks, const size_t *n_toks, int n_texts,
                 const struct engine_embed_params *p, float *out, pb_err *err)
{
    return sched_embed(e->sched, toks, n_toks, n_texts, p, out, err);
}

/* ---- tool calls ---- */

const char *engine_tool_style(const struct engine *e)
{
    bool knows;
    return chat_tool_style_name(chat_tool_style(e->chat, &knows));
}

/* A template that knows no tools is told the generic form. */
static enum chat_tool_style tool_style(const struct engine *e)
{
    bool knows;
    enum chat_tool_style st = chat_tool_style(e->chat, &knows);
    return knows ? st : CHAT_TOOLS_GENERIC;
}

int engine_tool_grammar(struct engine *e, const json_t *tools, const char *only, bool parallel, char **gbnf,
                        pb_err *err)
{
    return chat_tool_grammar(tool_style(e), tools, only, parallel, gbnf, err);
}

int engine_tool_parse(const struct engine *e, const json_t *tools, const char *text, size_t len, json_t **calls,
                      size_t *content_len)
{
    return chat_tool_parse(tool_style(e), tools, text, len, calls, content_len);
}

size_t engine_tool_safe(const struct engine *e, const char *text, size_t len)
{
    return chat_tool_safe(tool_style(e), text, len);
}

/* ---- requests ---- */

int engine_submit(struct engine *e, const int32_t *prompt, size_t n_prompt, const struct engine_request_params *p,
                  const struct engine_events *ev, struct engine_request **out, pb_err *err)
{
    if (engine_is_encoder(e)) {
        *out = NULL;
        return pb_fail(err, PB_EINVAL, "%s is an encoder model: it makes embeddings (plumb embed, /v1/embeddings), "
                       "not text", model_hparams(e->model)->arch);
    }
    return sched_submit(e->sched, prompt, n_prompt, p, ev, out, err);
}

void engine_cancel(struct engine *e, struct engine_request *r)
{
    sched_cancel(e->sched, r);
}

void engine_cancel_all(struct engine *e)
{
    sched_cancel_all(e->sched);
}

void engine_release(struct engine *e, struct engine_request *r)
{
    sched_release(e->sched, r);
}

void engine_get_stats(struct engine *e, struct engine_stats *st)
{
    sched_get_stats(e->sched, st);
}

/* engine_generate's waiting: the caller's events, then the end. */
struct waiter {
    const struct engine_events *ev;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done;
    struct engine_result res;
};

static int wait_step(void *user, const struct engine_step *s)
{
    struct waiter *w = user;
    return w->ev && w->ev->step ? w->ev->step(w->ev->user, s) : 0;
}

static void wait_done(void *user, const struct engine_result *r)
{
    struct waiter *w = user;
    if (w->ev && w->ev->done)
        w->ev->done(w->ev->user, r);
    pthread_mutex_lock(&w->mu);
    w->res = *r;
    w->res.tail = NULL; /* valid during the done event only */
    w->res.tail_len = 0;
    w->done = true;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

int engine_generate(struct engine *e, const int32_t *prompt, size_t n_prompt, const struct engine_request_params *p,
                    const struct engine_events *ev, struct engine_result *res, pb_err *err)
{
    memset(res, 0, sizeof *res);
    struct waiter w = {.ev = ev};
    pthread_mutex_init(&w.mu, NULL);
    pthread_cond_init(&w.cv, NULL);
    const struct engine_events mine = {&w, wait_step, wait_done};
    struct engine_request *r;
    int rc = engine_submit(e, prompt, n_prompt, p, &mine, &r, err);
    if (rc == PB_OK) {
        pthread_mutex_lock(&w.mu);
        while (!w.done)
            pthread_cond_wait(&w.cv, &w.mu);
        pthread_mutex_unlock(&w.mu);
        engine_release(e, r);
        *res = w.res;
        if (res->finish == ENGINE_FINISH_ERROR)
            rc = pb_fail(err, PB_EIO, "%s", res->error);
    }
    pthread_mutex_destroy(&w.mu);
    pthread_cond_destroy(&w.cv);
    return rc;
}
