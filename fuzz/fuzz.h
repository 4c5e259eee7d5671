/* What the fuzz targets share: the libFuzzer entry point (also called by
 * replay.c, the driver the test suite uses without libFuzzer) and the
 * fixtures some targets build once per process: small tokenizer
 * vocabularies written as GGUF images, conversations, temporary folders.
 *
 * Fixtures are harness code, not library code: they abort() when they
 * cannot be built, which libFuzzer and the replay both report.
 */
#ifndef PLUMB_FUZZ_H
#define PLUMB_FUZZ_H

#include "gguf/gguf.h"
#include "tokenizer/tokenizer.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A harness invariant: aborts with the message when cond is false (a
 * crash libFuzzer saves, whatever NDEBUG says). */
#define FUZZ_CHECK(cond, ...) ((cond) ? (void)0 : fuzz_fail(__FILE__, __LINE__, __VA_ARGS__))
void fuzz_fail(const char *file, int line, const char *fmt, ...) __attribute__((noreturn, format(printf, 3, 4)));

/* With FUZZ_VERBOSE set in the environment, prints a line saying how far
 * an input got (for checking that seeds reach what they should). */
void fuzz_note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* ---- vocabularies ----
 * A few hundred tokens in the shape of a real vocabulary of each kind:
 * SentencePiece ("llama": <unk> <s> </s>, the 256 byte tokens, pieces with
 * and without U+2581, scores) or byte-level BPE ("gpt2": GPT-2's 256 byte
 * characters, merges that build common words and pre-tokens), control and
 * user-defined tokens chat templates use. */
struct fuzz_vocab {
    bool bpe;                  /* false: SentencePiece */
    const char *pre;           /* BPE: tokenizer.ggml.pre (NULL: none, the default) */
    int add_space_prefix;      /* SentencePiece: -1 absent, else the flag written */
    int add_bos;               /* -1 absent, else tokenizer.ggml.add_bos_token */
    const char *chat_template; /* tokenizer.chat_template, or NULL */
    const char *arch;          /* general.architecture, or NULL */
};

/* The vocabulary as a GGUF image, written to an unnamed temporary file and
 * opened (the image stays valid until gguf_close). */
struct gguf_file *fuzz_vocab_gguf(const struct fuzz_vocab *v);
/* The same image's bytes (malloc'd) in *len. */
uint8_t *fuzz_vocab_bytes(const struct fuzz_vocab *v, size_t *len);
/* tok_load of fuzz_vocab_gguf(v). */
struct tokenizer *fuzz_tokenizer(const struct fuzz_vocab *v);

/* ---- conversations ----
 * Two message lists every chat template is rendered with: well-formed
 * turns of each role (system, user, assistant with tool calls and
 * reasoning, tool), and hostile ones (template syntax, special-token
 * text, NUL bytes, non-string and part-list contents, unknown roles). */
const json_t *fuzz_messages_plain(void);
const json_t *fuzz_messages_hostile(void);
/* Tools as chat templates receive them. */
const json_t *fuzz_tools(void);

/* ---- files ---- */

/* The source tree's path of rel (FUZZ_SOURCE_DIR/rel) into buf. */
const char *fuzz_source_path(const char *rel, char *buf, size_t size);
/* A whole file (NUL-terminated; *len without it), or NULL. */
char *fuzz_read_file(const char *path, size_t *len);
/* The *.jinja files of dir (sorted, full paths, malloc'd; NULL-ended). */
char **fuzz_list_templates(const char *dir);
/* A fresh folder under $TMPDIR (or /dev/shm when it exists), removed with
 * everything in it when the process exits. */
const char *fuzz_tmpdir(const char *tag);
/* Removes path and everything under it (rm -r; what cannot be removed
 * stays, silently). */
void fuzz_rmtree(const char *path);

/* ---- bundles ---- */

/* Writes len bytes as a bundle file and verifies it with store_import
 * (check_only) in a store of its own (made on the first call). */
void fuzz_import_bundle(const void *data, size_t len);

#endif
