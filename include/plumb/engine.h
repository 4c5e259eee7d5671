/* The engine: a model loaded and ready to generate, for one user (plumb
 * run, plumb chat, plumb bench) or many at once (plumb serve).
 *
 * An engine owns the model's weights, its tokenizer, its chat format, a
 * context of n_slots sequences (their KV caches) and the generation loop,
 * which runs on a thread of its own. Every way of generating goes through
 * that loop: a request is submitted, waits in a bounded queue for a free
 * slot, and is then evaluated together with the others, one forward pass
 * per step for all slots (continuous batching). A step carries the next
 * token of every slot that is generating and chunks of the prompts of
 * newly admitted ones; each slot samples with its own sampler and seed,
 * and a row's arithmetic does not depend on what else is in the batch, so
 * a request's tokens are the same alone or among others.
 *
 * A slot keeps the tokens its cache holds after its request ends: a new
 * prompt that begins with them (a shared system prompt, the earlier turns
 * of a conversation) skips that prefix, and a longer prefix held by
 * another slot is copied instead of computed.
 *
 * What a request hands back, step by step on the engine's thread: the
 * sampled token, the text it lets out (whole UTF-8 characters, never a
 * part of a stop string), and on request the step's logits or its K
 * highest; then exactly one done event with the finish reason, the
 * counts, the timings and the text held back until the end.
 */
#ifndef PLUMB_ENGINE_H
#define PLUMB_ENGINE_H

#include "plumb/base.h"
#include "plumb/profile.h"
#include "plumb/sampler.h"
#include "plumb/tokenizer.h"

#include <jansson.h>

/* ---- defaults (the one place they are written) ---- */

#define ENGINE_DEFAULT_MAX_CTX 4096    /* context when none is asked: the model's training context up to this */
#define ENGINE_DEFAULT_BATCH 512       /* tokens per forward pass */
#define ENGINE_DEFAULT_QUEUE 64        /* requests waiting for a slot */
#define ENGINE_DEFAULT_PREFILL_CHUNK 256 /* prompt tokens per step while others generate */
/* a step's target duration while slots generate: below the 150 ms a
 * streaming reader notices, with room for the estimate's misses (at 150
 * the 95th percentile of inter-token gaps landed at 151-162 ms) */
#define ENGINE_DEFAULT_STEP_MS 130
#define ENGINE_MAX_SLOTS 256
#define ENGINE_MAX_STOPS 4             /* stop strings per request */
#define ENGINE_MAX_LOGIT_BIAS 1024     /* logit_bias entries per request */
/* What a plumb process holds besides its models, in the estimate's
 * runtime part: code and libraries mapped and touched, the C library's
 * arenas, thread stacks as used. Measured: 12.8 MiB for plumb run on a
 * 1 MB model (x86-64, Debian 12); tests/test_memory.c holds it there. */
#define ENGINE_PROCESS_BYTES (13ull << 20)

/* ---- threads ----
 * The worker threads of a process, shared by every engine it runs (and
 * by their loading): jobs of several engines take turns, so two served
 * models on two cores keep two threads busy, not four. */
struct engine_threads;

/* n_threads 0: every CPU this process may use. */
int engine_threads_create(int n_threads, struct engine_threads **out, pb_err *err);
void engine_threads_free(struct engine_threads *t);
int engine_threads_count(const struct engine_threads *t);

/* Settings that work but cost dearly, said before they are used (run, chat
 * and bench print it, serve logs it, doctor reports it). Each returns true
 * and a warning in msg (what it costs, what to use) when there is one. */
/* n_threads (0: all CPUs) beyond the CPUs this process may use. */
bool engine_threads_advice(int n_threads, char *msg, size_t size);
/* A context per slot beyond the model's training context (0: unknown). */
bool engine_ctx_advice(int64_t n_ctx, int64_t n_ctx_train, char *msg, size_t size);
/* CPUs this process may use. */
int engine_cpu_count(void);

/* ---- opening ---- */

struct engine_params {
    int64_t n_ctx;       /* tokens of context per slot; 0: the model's training context, at most ENGINE_DEFAULT_MAX_CTX */
    int n_slots;         /* requests generating at once */
    int n_batch;         /* tokens per forward pass */
    enum pb_kv_type kv_type;
    int max_queue;       /* requests that may wait for a slot */
    int prefill_chunk;   /* prompt tokens per step at most while other slots generate */
    double step_target_s;/* while slots generate, a step aims at this time: prompt tokens are added
                          * only as the measured time per token allows (bounds inter-token latency) */
    const char *chat_format; /* NULL: the model's template; else a built-in format (engine_chat_formats) */
    struct engine_threads *threads; /* shared threads (borrowed); NULL: threads of its own */
    int n_threads;       /* threads of its own (0: all CPUs) when threads is NULL */
    bool ignore_memory;  /* load even when the memory estimate exceeds the memory available */
};

/* Every field at its default: one slot, the defaults above, F16 KV cache. */
struct engine_params engine_defaults(void);

/* What running a model takes, in bytes, from the same sizes its loading
 * and its context allocate. The KV cache and the buffers are reserved
 * whole and committed as they fill: the figures are for full contexts. */
struct engine_memory {
    uint64_t weights;  /* matrices as the kernels read them (repacked or mapped), tables, vectors */
    uint64_t kv;       /* KV caches of every slot at full context */
    uint64_t compute;  /* activation buffers of one batch, scratch, cached-token records */
    uint64_t runtime;  /* the tokenizer, and the process itself (code, libraries, stacks) */
    uint64_t total;
    uint64_t per_slot; /* of those, what each slot adds: its KV cache, logits and token records */
    uint64_t available;/* memory the kernel could give now (MemAvailable), 0 if unknown */
    int64_t n_ctx;     /* the context per slot the figures are for */
    int64_t n_ctx_train; /* the model's training context (0: unknown) */
};

/* The estimate for opening path with p, without loading it (the file's
 * tensors are read, not repacked). */
int engine_estimate(const char *path, const struct engine_params *p, struct engine_memory *out, pb_err *err);

/* A model known by its shape alone (a catalog entry, before any file). */
struct engine_shape {
    int64_t n_vocab, n_embd, n_layer, n_head, n_head_kv, head_dim, n_ff;
    int64_t n_ctx_train;
    int64_t n_swa, swa_pattern; /* sliding window, and one layer in swa_pattern global (0: none) */
    uint64_t weight_bytes;      /* of the file type considered */
    bool float_weights;         /* F16/BF16/F32 weights: float activations, else 8-bit blocks */
};

/* The estimate for such a shape with p (no file: the tokenizer is sized
 * from the vocabulary). */
int engine_estimate_shape(const struct engine_shape *s, const struct engine_params *p, struct engine_memory *out,
                          pb_err *err);

struct engine;

/* Loads the model, its tokenizer and chat format, and starts the loop.
 * Fails with PB_ENOMEM, with the figures in the message, when the
 * estimate exceeds the memory available (unless p->ignore_memory). */
int engine_open(const char *path, const struct engine_params *p, struct engine **out, pb_err *err);
/* The same from a GGUF image in fd (a file or a memfd; the descriptor is
 * duplicated). With discardable, the image's pages are freed as the
 * weights are repacked (a model made in memory, read once). */
int engine_open_fd(int fd, const char *name, bool discardable, const struct engine_params *p, struct engine **out,
                   pb_err *err);
/* Stops the loop (requests still queued or running end as cancelled) and
 * frees everything. */
void engine_close(struct engine *e);

struct engine_info {
    char arch[64];
    int64_t n_ctx;        /* per slot */
    int64_t n_ctx_train;  /* the model's training context (0: unknown) */
    int n_slots, n_batch, n_threads;
    int32_t n_vocab;
    enum pb_kv_type kv_type;
    const char *chat_format; /* "model template" or the built-in format's name */
    const char *chat_notice; /* why a fallback format was taken, or "" */
    const char *kernels;     /* the kernel set in use ("avx512vnni", ...) */
    double load_s;
    uint64_t weight_bytes;   /* weights a generated token reads */
    uint64_t n_params;
    char file_type[16];      /* general.file_type's name ("Q4_K_M"), "" when absent */
    struct engine_memory mem;/* the estimate for this engine as opened */
};
void engine_get_info(const struct engine *e, struct engine_info *out);

const struct tokenizer *engine_tokenizer(const struct engine *e);

/* A GGUF file described, as plumb show prints it: a JSON object with
 * file, size_bytes, gguf_version, metadata_keys, tensor_count, alignment,
 * architecture, name, file_type, parameters, tensor_bytes,
 * context_length, hparams (or hparams_error), memory (the engine's
 * estimate at its defaults, or {"error"}), tokenizer, chat_template,
 * chat_template_bytes, tensor_types; with tensors, every tensor's name,
 * type, shape, bytes and offset; with metadata, every key's value and
 * GGUF type (metadata_types). */
int engine_describe(const char *path, bool tensors, bool metadata, json_t **out, pb_err *err);

/* ---- chat ---- */

/* The built-in chat formats, for help and errors ("chatml, llama3, ..."),
 * and whether name is one. */
const char *engine_chat_formats(void);
bool engine_chat_format_known(const char *name);

/* Reasoning models think before they answer: Qwen3, QwQ, DeepSeek-R1 and
 * SmolLM3 between <think> and </think>, gpt-oss in its harmony analysis
 * channel. The engine can hand the two apart as the text streams. */
enum engine_reasoning {
    ENGINE_REASONING_NONE,    /* everything is answer */
    ENGINE_REASONING_THINK,   /* <think> ... </think> */
    ENGINE_REASONING_HARMONY, /* gpt-oss's channels */
};

/* Per-request switches a chat template reads. */
struct engine_chat_opts {
    bool no_thinking;             /* Qwen3 and the like: answer without thinking (enable_thinking = false) */
    const char *reasoning_effort; /* gpt-oss: "low", "medium" or "high"; NULL: the template's default */
    const json_t *tools;          /* tools offered (OpenAI's [{"type": "function", "function": {...}}]), or
                                   * NULL; messages may hold assistant tool_calls and "tool" results */
};

/* How the answer to a chat prompt starts: the template's reasoning markup,
 * and whether the prompt itself opened a thinking block. */
struct engine_answer_start {
    enum engine_reasoning style;
    bool in_reasoning;
};

/* A conversation (a JSON array of {"role", "content"} messages) rendered
 * with the engine's chat format and opts (may be NULL: the defaults), the
 * assistant's turn opened, and tokenized (template markup becomes special
 * tokens, message text does not). Safe from several threads. *ids is
 * allocated; start (may be NULL) says how the answer starts: give it to a
 * request's `reasoning` to have the reasoning handed apart. */
int engine_chat_prompt(struct engine *e, const json_t *messages, const struct engine_chat_opts *opts, int32_t **ids,
                       size_t *n_ids, struct engine_answer_start *start, pb_err *err);

/* ---- tool calls ----
 * Each model family writes tool calls its own way (Qwen and Hermes in
 * <tool_call> blocks, Llama 3 as {"name", "parameters"}, Mistral after
 * [TOOL_CALLS], gpt-oss in harmony's commentary channel); a template that
 * knows no tools is given them in its system message with a generic JSON
 * form ({"tool_calls": [{"name", "arguments"}]}), which is also read back
 * from every family. The style follows the chat template's markers. */

/* "generic", "hermes", "llama3", "mistral" or "harmony". */
const char *engine_tool_style(const struct engine *e);
/* The grammar that makes the output calls to the tools in the model's
 * format (only: that function alone, NULL: any; parallel: several calls
 * where the format allows), each call's arguments following the
 * function's parameters schema. An unsupported schema is PB_EINVAL
 * naming the function and the keyword. */
int engine_tool_grammar(struct engine *e, const json_t *tools, const char *only, bool parallel, char **gbnf,
                        pb_err *err);
/* An answer read back: *calls is a new array of {"name", "arguments"
 * (JSON text)} when it calls offered tools, and *content_len the length
 * of the text before the calls; else *calls is NULL. */
int engine_tool_parse(const struct engine *e, const json_t *tools, const char *text, size_t len, json_t **calls,
                      size_t *content_len);
/* While an answer streams: its leading bytes that are surely text, not a
 * part of a call. */
size_t engine_tool_safe(const struct engine *e, const char *text, size_t len);

/* ---- requests ---- */

/* A bias added to one token's logit before sampling (OpenAI's
 * logit_bias: -100 bans the token in practice, +100 all but forces it). */
struct engine_logit_bias {
    int32_t id;
    float bias;
};

struct engine_request_params {
    struct sampler_params sampling;
    int n_predict;        /* tokens to generate at most; < 0: until end of generation or a full context */
    bool ignore_eog;      /* go on past end-of-generation tokens (benchmarks) */
    bool json_object;     /* only tokens that keep the text a JSON object; it ends when the object does */
    const char *grammar;  /* GBNF (copied; plumb/sampler.h): only tokens that keep the text a prefix of
                           * one of its sentences, end of generation once it is whole; it ends when
                           * nothing can follow. Takes the place of json_object. A grammar that does
                           * not compile is PB_EINVAL with its message. */
    const struct engine_logit_bias *logit_bias; /* copied; ids must be in the vocabulary */
    int n_logit_bias;
    const char *stop[ENGINE_MAX_STOPS]; /* stop strings (copied): the text ends before the first found */
    int n_stop;
    int n_top;            /* > 0: each step reports its n_top highest logits */
    bool want_logits;     /* each step carries all of its logits */
    struct engine_answer_start reasoning; /* style NONE: all text is answer; else the reasoning is handed
                                           * apart (engine_chat_prompt says how the answer starts) */
};

/* llama.cpp's sampling defaults, no limit, nothing reported. */
struct engine_request_params engine_request_defaults(void);

/* One generated token, on the engine's thread. */
struct engine_step {
    int index;              /* 0 for the first token after the prompt */
    int32_t id;
    const char *text;       /* the answer text this step lets out (may be empty: held back) */
    size_t text_len;
    const char *reasoning;  /* with a request's reasoning style: the reasoning text it lets out, without the
                             * markup (may be empty) */
    size_t reasoning_len;
    const float *logits;    /* want_logits: the n_vocab logits it was drawn from (logit_bias added),
                             * valid during the call */
    int32_t n_vocab;
    const int32_t *top_ids; /* n_top: the highest logits, highest first (ties to the lower id) */
    const float *top_logits;
    int n_top;
};

enum engine_finish {
    ENGINE_FINISH_EOG,       /* an end-of-generation token (not reported as a step) */
    ENGINE_FINISH_LENGTH,    /* n_predict tokens */
    ENGINE_FINISH_CONTEXT,   /* the slot's context is full */
    ENGINE_FINISH_STOP,      /* a stop string, or JSON mode's object ended */
    ENGINE_FINISH_CALLER,    /* the step callback asked to stop */
    ENGINE_FINISH_CANCELLED, /* engine_cancel, or the engine closed */
    ENGINE_FINISH_ERROR,
};

/* "eog", "length", "context", "stop", "caller", "cancelled", "error". */
const char *engine_finish_name(enum engine_finish f);

struct engine_result {
    enum engine_finish finish;
    int n_prompt, n_gen;
    int n_reused;          /* prompt tokens whose cache was reused or copied */
    double t_queued;       /* seconds waiting for a slot */
    double t_prompt;       /* seconds from taking a slot to the first token's logits */
    double t_gen;          /* seconds from the first token to the end */
    double t_total;        /* seconds from submission to the end */
    const char *tail;      /* text held back until the end, let out now (valid during the call) */
    size_t tail_len;
    const char *tail_reasoning; /* the same of the reasoning */
    size_t tail_reasoning_len;
    char error[512];       /* ENGINE_FINISH_ERROR: what went wrong */
};

struct engine_events {
    void *user;
    /* non-zero stops the request (ENGINE_FINISH_CALLER) */
    int (*step)(void *user, const struct engine_step *s);
    void (*done)(void *user, const struct engine_result *r);
};

struct engine_request;

/* Queues a request (the prompt and stop strings are copied). Fails with
 * PB_EINVAL for bad input (an empty prompt, a token id outside the
 * vocabulary, bad sampling values), PB_ETOOLONG when the prompt leaves no
 * room for an answer in a slot's context (it must be shorter than
 * n_ctx), PB_EBUSY when every slot is busy and the queue is full,
 * PB_ESTOPPING when the engine is closing. *out stays valid until
 * engine_release. Events are delivered on the engine's thread; they must
 * be quick, may call engine_cancel, and must not call engine_close. */
int engine_submit(struct engine *e, const int32_t *prompt, size_t n_prompt, const struct engine_request_params *p,
                  const struct engine_events *ev, struct engine_request **out, pb_err *err);
/* Asks a request to end (a client went away): done reports
 * ENGINE_FINISH_CANCELLED at the next step unless it already ended. */
void engine_cancel(struct engine *e, struct engine_request *r);
/* Ends every request as cancelled and refuses new ones (shutting down). */
void engine_cancel_all(struct engine *e);
/* The caller is finished with r (after or before its done event). */
void engine_release(struct engine *e, struct engine_request *r);

/* Submits and waits for the end. ev (may be NULL) gets the events on the
 * engine's thread meanwhile; *res is the done event's result without its
 * tail (the done callback receives that). A request that ends in an
 * error returns PB_EIO with its message. */
int engine_generate(struct engine *e, const int32_t *prompt, size_t n_prompt, const struct engine_request_params *p,
                    const struct engine_events *ev, struct engine_result *res, pb_err *err);

struct engine_stats {
    int n_slots, active, queued;
    uint64_t prompt_tokens;    /* prompt tokens submitted */
    uint64_t reused_tokens;    /* of those, not evaluated: reused or copied prefixes */
    uint64_t generated_tokens;
    uint64_t embedded_tokens;  /* tokens of texts embedded */
    uint64_t steps;            /* forward passes */
    uint64_t step_tokens;      /* tokens they evaluated */
    double step_seconds;       /* time in forward passes */
    double part_seconds[PB_PART_COUNT]; /* of step_seconds, in each part of the passes (plumb/profile.h) */
    double sample_seconds;     /* time sampling and handing tokens over */
    int64_t kv_used, kv_capacity; /* positions held / positions of all slots */
    int64_t kv_shared;            /* of kv_used, positions a slot reads from another's rows (held once) */
};
void engine_get_stats(struct engine *e, struct engine_stats *st);

/* ---- embeddings ----
 * A text's embedding: the model's final states of its tokens pooled into
 * one vector of n_embd values. Encoders (bert) see the whole text at once
 * and pool as their file says (mean or the [CLS] token); decoders pool
 * the last token's state (or the mean) after their final norm. */

enum engine_pooling {
    ENGINE_POOL_DEFAULT, /* the file's pooling_type (encoders), else the last token */
    ENGINE_POOL_MEAN,
    ENGINE_POOL_CLS,     /* the first token's state */
    ENGINE_POOL_LAST,
};

struct engine_embed_params {
    enum engine_pooling pooling;
    bool normalize;      /* L2-normalized (as llama.cpp's and OpenAI's embeddings are) */
};

/* The width of the embeddings (n_embd), and whether the model is an
 * encoder (embeddings only: generation is refused). */
int64_t engine_embed_dim(const struct engine *e);
bool engine_is_encoder(const struct engine *e);
/* What the model of a file can do, read without loading it (a server
 * lists a model before its first load): whether it is an encoder, and
 * the tool-call style engine_tool_style would give with chat_format
 * (NULL: the model's template). */
struct engine_caps {
    bool encoder;
    char tool_style[16];
};
int engine_caps_of(const char *path, const char *chat_format, struct engine_caps *out, pb_err *err);
/* The pooling a request with ENGINE_POOL_DEFAULT gets: "mean", "cls", "last". */
const char *engine_pooling_name(const struct engine *e, enum engine_pooling p);

/* Embeds n_texts texts given as token ids (each with its special tokens:
 * tok_encode with add_special) into out[i * dim .. (i + 1) * dim). The
 * texts run on the slots no request holds, between the loop's steps, as
 * many per forward pass as slots and the batch allow. A text longer than
 * the context (or the batch) is PB_ETOOLONG; PB_EBUSY when every slot is
 * generating. Waits for the result. */
int engine_embed(struct engine *e, const int32_t *const *toks, const size_t *n_toks, int n_texts,
                 const struct engine_embed_params *p, float *out, pb_err *err);

/* The kernel set in use, and the PLUMB_SIMD value when it names none (it
 * is then ignored; NULL otherwise), for the caller to report. */
const char *engine_kernels(void);
const char *engine_kernels_env_ignored(void);

#endif
