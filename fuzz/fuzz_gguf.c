/* GGUF files: the header, every metadata value and array element, the
 * tensor table, then what loads on top of whatever parses: the model's
 * hyperparameters, the architecture loader's binding of every tensor and
 * the memory estimate (model_mem_estimate: shapes, types and kernels
 * checked, no repacking), the tokenizer (a short text encoded and
 * decoded) and the chat template (a conversation rendered and tokenized).
 * The input is the file's image. */
#include "fuzz.h"

#include "chat/chat.h"
#include "model/model.h"

#include <stdlib.h>
#include <string.h>

/* Every metadata value through the accessors a reader uses. */
static void read_metadata(const struct gguf_file *f)
{
    char buf[64];
    for (uint64_t i = 0; i < gguf_n_kv(f); i++) {
        const char *key = gguf_kv_key(f, i);
        FUZZ_CHECK(key && gguf_find(f, key) >= 0, "key %llu not found by name", (unsigned long long)i);
        gguf_kv_format(f, i, buf, sizeof buf);
        FUZZ_CHECK(memchr(buf, 0, sizeof buf), "gguf_kv_format left no terminator");
        uint64_t len;
        (void)gguf_kv_raw(f, i, &len);
        pb_err err = {0};
        struct gguf_arr a;
        if (gguf_kv_type(f, i) != GGUF_ARRAY || gguf_get_arr(f, key, &a, &err) != 1)
            continue;
        /* the first and last few elements: enough to reach every offset */
        for (uint64_t k = 0; k < a.n; k = k < 4 || k + 4 >= a.n ? k + 1 : a.n - 4) {
            if (a.type == GGUF_STRING)
                (void)gguf_arr_str(&a, k);
            else if (a.type == GGUF_F32 || a.type == GGUF_F64)
                (void)gguf_arr_float(&a, k);
            else if (gguf_arr_is_int(&a))
                (void)gguf_arr_int(&a, k);
        }
    }
}

static void read_tensors(const struct gguf_file *f)
{
    for (uint64_t i = 0; i < gguf_n_tensors(f); i++) {
        const struct gguf_tensor *t = gguf_tensor(f, i);
        FUZZ_CHECK(t && t->name && gguf_find_tensor(f, t->name), "tensor %llu not found by name",
                   (unsigned long long)i);
        FUZZ_CHECK(gguf_tensor_nelements(t) >= 0, "negative element count");
        const uint8_t *base = gguf_base(f);
        FUZZ_CHECK((const uint8_t *)t->data >= base && t->nbytes <= gguf_file_size(f) &&
                       (uint64_t)((const uint8_t *)t->data - base) <= gguf_file_size(f) - t->nbytes,
                   "tensor '%s' data outside the image", t->name);
    }
}

static void load_model(const struct gguf_file *f)
{
    pb_err err = {0};
    struct model_hparams hp;
    if (model_hparams_read(f, &hp, &err) != PB_OK) {
        fuzz_note("hparams: %s", err.msg);
        return;
    }
    struct model_ctx_params p = {.n_ctx = 64, .n_batch = 8, .n_threads = 1, .n_seq = 2};
    struct model_mem mm;
    int rc = model_mem_estimate(f, &p, &hp, &mm, &err);
    fuzz_note("model: %s", rc ? err.msg : "bound, estimated");
    if (rc == PB_OK)
        FUZZ_CHECK(mm.total == mm.weights + mm.vectors + mm.kv + mm.compute, "memory parts do not add up");
}

static void load_tokenizer(const struct gguf_file *f)
{
    pb_err err = {0};
    struct tokenizer *t;
    if (tok_load(f, &t, &err) != PB_OK) {
        fuzz_note("tokenizer: %s", err.msg);
        return;
    }
    static const char text[] = "Hello world <s> <|im_start|> \xf0\x9f\xa6\x99 \xff\xfe  12345";
    int32_t *ids;
    size_t n;
    if (tok_encode(t, text, sizeof text - 1, true, true, &ids, &n, &err) == PB_OK) {
        char piece[64];
        for (size_t i = 0; i < n; i++) {
            FUZZ_CHECK(ids[i] >= 0 && ids[i] < tok_n_vocab(t), "token id %d out of range", ids[i]);
            (void)tok_piece(t, ids[i], true, piece, sizeof piece);
        }
        free(ids);
    }
    struct chat *c;
    char notice[256];
    if (chat_open(f, t, NULL, &c, notice, sizeof notice, &err) == PB_OK) {
        int rc = chat_tokenize(c, t, fuzz_messages_plain(), true, NULL, &ids, &n, NULL, &err);
        fuzz_note("chat (%s): %s", chat_name(c), rc ? err.msg : "rendered, tokenized");
        if (rc == PB_OK)
            free(ids);
        chat_free(c);
    }
    tok_free(t);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct gguf_file *f;
    pb_err err = {0};
    if (gguf_open_memory(data, size, "fuzz.gguf", &f, &err) != PB_OK) {
        fuzz_note("gguf: %s", err.msg);
        return 0;
    }
    read_metadata(f);
    read_tensors(f);
    load_model(f);
    load_tokenizer(f);
    gguf_close(f);
    return 0;
}
