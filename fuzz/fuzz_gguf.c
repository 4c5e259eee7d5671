/* libFuzzer target: GGUF parsing, then the tokenizer and the hyperparameter
 * reader on whatever parses. Build with clang:
 *   cmake -S . -B build/fuzz -DCMAKE_C_COMPILER=clang -DPLUMB_FUZZ=ON
 *   cmake --build build/fuzz --target fuzz_gguf
 *   build/fuzz/fuzz/fuzz_gguf -max_len=65536 corpus/
 */
#include "gguf/gguf.h"
#include "model/model.h"
#include "tokenizer/tokenizer.h"

#include <stdint.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct gguf_file *f;
    pb_err err;
    if (gguf_open_memory(data, size, "fuzz.gguf", &f, &err) != PB_OK)
        return 0;
    struct model_hparams hp;
    (void)model_hparams_read(f, &hp, &err);
    struct tokenizer *t;
    if (tok_load(f, &t, &err) == PB_OK) {
        static const char text[] = "Hello world <s> 🦙 \xff\xfe";
        int32_t *ids;
        size_t n;
        if (tok_encode(t, text, sizeof text - 1, true, true, &ids, &n, &err) == PB_OK) {
            char piece[64];
            for (size_t i = 0; i < n; i++)
                (void)tok_piece(t, ids[i], true, piece, sizeof piece);
            free(ids);
        }
        tok_free(t);
    }
    gguf_close(f);
    return 0;
}
