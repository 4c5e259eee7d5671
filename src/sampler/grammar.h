/* Constrained decoding: a context-free grammar (GBNF, the notation
 * llama.cpp's "grammar" field takes) compiled once, and a matcher that
 * says which tokens may come next.
 *
 * The notation: rules `name ::= alternatives`, the start rule `root`;
 * string literals "..." (escapes \n \r \t \\ \" \[ \] \xHH \uHHHH
 * \UHHHHHHHH), character classes [a-z0-9_] and [^...], `.` (any
 * character), rule names, groups ( ... ), and the postfix operators *, +,
 * ?, {m}, {m,}, {m,n}; `|` separates alternatives; `#` starts a comment.
 * A rule may span lines: it ends where the next `name ::=` begins.
 * Characters are Unicode code points; the text is UTF-8.
 *
 * The matcher's state is a set of stacks of positions in the grammar
 * (a pushdown automaton run on all alternatives at once). A rule
 * referenced last in an alternative replaces its caller's frame (a tail
 * call), so `x*` and right recursion take constant depth. Left recursion
 * (a rule that can reach itself before consuming a character) would
 * never end expanding: it is refused when compiling, with the rule's name.
 *
 * Masks: the vocabulary's token texts sit in a byte trie (struct gtrie,
 * built once per vocabulary); a mask walks the trie against the state,
 * byte by byte, and prunes every subtree whose prefix the grammar refuses,
 * so a state that allows few tokens costs little. Masks are cached per
 * state (the stacks and a pending partial UTF-8 character), so inside a
 * long string, where the state repeats, a step costs a table look-up.
 *
 * Bounds (nothing hangs or grows without limit): grammar text, symbols
 * and repetition counts are capped when compiling; a state keeps at most
 * GRAMMAR_MAX_STACKS stacks of at most GRAMMAR_MAX_DEPTH frames (further
 * ones are dropped: a grammar so ambiguous or so deeply nested loses
 * those continuations, never correctness of what it allows); tokens
 * longer than GRAMMAR_MAX_TOKEN bytes are never allowed under a grammar.
 */
#ifndef PLUMB_SAMPLER_GRAMMAR_H
#define PLUMB_SAMPLER_GRAMMAR_H

#include "base/err.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define GRAMMAR_MAX_TEXT (4u << 20)   /* bytes of grammar text */
#define GRAMMAR_MAX_SYMS (4u << 20)   /* compiled symbols */
#define GRAMMAR_MAX_REPEAT 100000     /* m and n of {m,n} */
#define GRAMMAR_MAX_STACKS 256
#define GRAMMAR_MAX_DEPTH 512
#define GRAMMAR_MAX_TOKEN 96
#define GRAMMAR_CACHE 128             /* masks cached per matcher */

struct grammar;

/* Compiles GBNF text (root rule "root"). Errors name the line, column and
 * what was expected, an undefined or left-recursive rule. */
int grammar_parse(const char *text, size_t len, struct grammar **out, pb_err *err);
void grammar_free(struct grammar *g);
/* Rules in the compiled grammar (after groups and repetitions became
 * rules of their own). */
uint32_t grammar_n_rules(const struct grammar *g);

/* The token texts of a vocabulary as a byte trie: token i is
 * pieces[off[i] .. off[i + 1]); tokens with skip[i] set (end of
 * generation, control tokens: the caller decides about them), empty ones
 * and those longer than GRAMMAR_MAX_TOKEN bytes are left out. */
struct gtrie;
int gtrie_build(const char *pieces, const uint32_t *off, int32_t n_vocab, const uint8_t *skip, struct gtrie **out,
                pb_err *err);
void gtrie_free(struct gtrie *t);

/* A matcher: the grammar's state after the text fed so far. */
struct gmatch;
int gmatch_create(const struct grammar *g, struct gmatch **out, pb_err *err);
void gmatch_free(struct gmatch *m);
/* Feeds n bytes; false when the grammar refuses them (the state is then
 * unchanged). */
bool gmatch_feed(struct gmatch *m, const char *bytes, size_t n);
/* Whether the grammar takes these n bytes next (the state does not change). */
bool gmatch_accepts(struct gmatch *m, const char *bytes, size_t n);
/* The text so far is a whole sentence of the grammar. */
bool gmatch_complete(const struct gmatch *m);
/* ... and nothing can follow it. */
bool gmatch_done(const struct gmatch *m);
/* allowed[i] = 1 for every token of the trie that may come next, 0 for
 * the others (n_vocab entries; tokens the trie left out are 0). Returns
 * the number allowed. */
int32_t gmatch_mask(struct gmatch *m, const struct gtrie *t, uint8_t *allowed);
/* Counters for tests and benchmarks: masks computed, and taken from the
 * cache. */
void gmatch_counts(const struct gmatch *m, uint64_t *computed, uint64_t *cached);

#endif
