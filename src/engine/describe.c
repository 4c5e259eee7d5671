/* A GGUF file described for plumb show (engine_describe, plumb/engine.h):
 * what it holds and what running it takes, as one JSON object. */
#include "plumb/engine.h"

#include "base/err.h"
#include "base/utf8.h"
#include "chat/chat.h"
#include "gguf/gguf.h"
#include "model/model.h"
#include "quant/types.h"
#include "tokenizer/tokenizer.h"

#include <stdio.h>
#include <string.h>

struct type_sum {
    uint64_t tensors, params, bytes;
};

static json_t *str_json(struct gguf_str s)
{
    return pb_json_text(s.data, (size_t)s.len);
}

/* An optional string key as JSON (null when absent). */
static json_t *key_json(const struct gguf_file *f, const char *key, struct gguf_str *out)
{
    struct gguf_str s = {0, ""};
    bool has = gguf_get_str(f, key, &s, NULL) == 1;
    if (out)
        *out = s;
    return has ? str_json(s) : json_null();
}

static json_t *hparams_json(const struct model_hparams *hp)
{
    return json_pack("{s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:f,s:f}", "n_vocab", (json_int_t)hp->n_vocab, "n_embd",
                     (json_int_t)hp->n_embd, "n_layer", (json_int_t)hp->n_layer, "n_head", (json_int_t)hp->n_head,
                     "n_head_kv", (json_int_t)hp->n_head_kv, "head_dim", (json_int_t)hp->head_dim, "n_ff",
                     (json_int_t)hp->n_ff, "n_rot", (json_int_t)hp->n_rot, "rope_freq_base", (double)hp->rope_base,
                     "rms_eps", (double)hp->rms_eps);
}

static json_t *memory_json(const char *path)
{
    const struct engine_params p = engine_defaults();
    struct engine_memory m;
    pb_err err = {0};
    if (engine_estimate(path, &p, &m, &err))
        return json_pack("{s:s}", "error", err.msg);
    return json_pack("{s:I,s:I,s:s,s:I,s:I,s:I,s:I,s:I}", "context", (json_int_t)m.n_ctx, "slots", (json_int_t)p.n_slots,
                     "kv_type", pb_kv_type_name(p.kv_type), "weights_bytes", (json_int_t)m.weights, "kv_cache_bytes",
                     (json_int_t)m.kv, "compute_bytes", (json_int_t)m.compute, "runtime_bytes",
                     (json_int_t)m.runtime, "total_bytes", (json_int_t)m.total);
}

static json_t *tensor_list(const struct gguf_file *f)
{
    json_t *ta = json_array();
    for (uint64_t i = 0; i < gguf_n_tensors(f); i++) {
        const struct gguf_tensor *t = gguf_tensor(f, i);
        json_t *shape = json_array();
        for (uint32_t d = 0; d < t->n_dims; d++)
            json_array_append_new(shape, json_integer(t->ne[d]));
        json_array_append_new(ta, json_pack("{s:o,s:s,s:o,s:I,s:I}", "name", pb_json_text(t->name, strlen(t->name)),
                                            "type", pb_type_name(t->type), "shape", shape, "bytes",
                                            (json_int_t)t->nbytes, "offset", (json_int_t)t->offset));
    }
    return ta;
}

/* Every key: its value (strings whole, the rest as gguf_kv_format writes
 * them, arrays abbreviated) and its GGUF type. */
static void metadata(const struct gguf_file *f, json_t *o)
{
    json_t *mo = json_object(), *types = json_object();
    for (uint64_t i = 0; i < gguf_n_kv(f); i++) {
        char buf[256];
        const char *key = gguf_kv_key(f, i);
        gguf_kv_format(f, i, buf, sizeof buf);
        json_object_set_new(mo, key, gguf_kv_type(f, i) == GGUF_STRING ? str_json(gguf_kv_str(f, i))
                                                                      : pb_json_text(buf, strlen(buf)));
        json_object_set_new(types, key, json_string(gguf_vtype_name(gguf_kv_type(f, i))));
    }
    json_object_set_new(o, "metadata", mo);
    json_object_set_new(o, "metadata_types", types);
}

int engine_describe(const char *path, bool tensors, bool with_metadata, json_t **out, pb_err *err)
{
    *out = NULL;
    struct gguf_file *f;
    int rc = gguf_open(path, &f, err);
    if (rc)
        return rc;
    struct type_sum sums[PB_TYPE_COUNT] = {{0}};
    uint64_t n_params = 0, n_bytes = 0;
    for (uint64_t i = 0; i < gguf_n_tensors(f); i++) {
        const struct gguf_tensor *t = gguf_tensor(f, i);
        const uint64_t nel = (uint64_t)gguf_tensor_nelements(t);
        sums[t->type].tensors++;
        sums[t->type].params += nel;
        sums[t->type].bytes += t->nbytes;
        n_params += nel;
        n_bytes += t->nbytes;
    }
    json_t *o = json_object();
    json_object_set_new(o, "file", pb_json_text(gguf_name(f), strlen(gguf_name(f))));
    json_object_set_new(o, "size_bytes", json_integer((json_int_t)gguf_file_size(f)));
    json_object_set_new(o, "gguf_version", json_integer(gguf_version(f)));
    json_object_set_new(o, "metadata_keys", json_integer((json_int_t)gguf_n_kv(f)));
    json_object_set_new(o, "tensor_count", json_integer((json_int_t)gguf_n_tensors(f)));
    json_object_set_new(o, "alignment", json_integer((json_int_t)gguf_alignment(f)));
    json_object_set_new(o, "architecture", key_json(f, "general.architecture", NULL));
    json_object_set_new(o, "name", key_json(f, "general.name", NULL));
    int64_t ft;
    const char *ftn = gguf_get_int(f, "general.file_type", &ft, NULL) == 1 ? pb_ftype_name(ft) : NULL;
    json_object_set_new(o, "file_type", ftn ? json_string(ftn) : json_null());
    json_object_set_new(o, "parameters", json_integer((json_int_t)n_params));
    json_object_set_new(o, "tensor_bytes", json_integer((json_int_t)n_bytes));
    pb_err herr = {0};
    struct model_hparams hp;
    if (model_hparams_read(f, &hp, &herr) == PB_OK) {
        json_object_set_new(o, "context_length", json_integer(hp.n_ctx_train));
        json_object_set_new(o, "hparams", hparams_json(&hp));
        json_object_set_new(o, "memory", memory_json(path));
    } else {
        json_object_set_new(o, "context_length", json_null());
        json_object_set_new(o, "hparams_error", json_string(herr.msg));
        json_object_set_new(o, "memory", json_null());
    }
    struct gguf_str tmpl;
    json_t *tokm = key_json(f, "tokenizer.ggml.model", NULL);
    struct gguf_arr toks = {0};
    const uint64_t n_tokens = gguf_get_arr(f, "tokenizer.ggml.tokens", &toks, NULL) == 1 ? toks.n : 0;
    json_object_set_new(o, "tokenizer",
                        json_is_null(tokm) ? tokm
                                           : json_pack("{s:o,s:o,s:I}", "model", tokm, "pre",
                                                       key_json(f, "tokenizer.ggml.pre", NULL), "tokens",
                                                       (json_int_t)n_tokens));
    json_t *has_tmpl = key_json(f, "tokenizer.chat_template", &tmpl);
    json_object_set_new(o, "chat_template", json_boolean(!json_is_null(has_tmpl)));
    json_object_set_new(o, "chat_template_bytes", json_integer((json_int_t)tmpl.len));
    json_decref(has_tmpl);
    json_t *types = json_array();
    for (int t = 0; t < PB_TYPE_COUNT; t++)
        if (sums[t].tensors)
            json_array_append_new(types, json_pack("{s:s,s:I,s:I,s:I}", "type", pb_type_name((uint32_t)t), "tensors",
                                                   (json_int_t)sums[t].tensors, "parameters",
                                                   (json_int_t)sums[t].params, "bytes", (json_int_t)sums[t].bytes));
    json_object_set_new(o, "tensor_types", types);
    if (tensors)
        json_object_set_new(o, "tensors", tensor_list(f));
    if (with_metadata)
        metadata(f, o);
    gguf_close(f);
    *out = o;
    return PB_OK;
}

int engine_caps_of(const char *path, const char *chat_format, struct engine_caps *out, pb_err *err)
{
    memset(out, 0, sizeof *out);
    struct gguf_file *f;
    struct tokenizer *tok = NULL;
    struct chat *chat = NULL;
    struct model_hparams hp;
    int rc = gguf_open(path, &f, err);
    if (rc)
        return rc;
    if ((rc = model_hparams_read(f, &hp, err)) || (rc = tok_load(f, &tok, err)) ||
        (rc = chat_open(f, tok, chat_format, &chat, NULL, 0, err)))
        goto done;
    bool knows;
    out->encoder = !hp.causal;
    snprintf(out->tool_style, sizeof out->tool_style, "%s", chat_tool_style_name(chat_tool_style(chat, &knows)));
done:
    chat_free(chat);
    tok_free(tok);
    gguf_close(f);
    return rc;
}
