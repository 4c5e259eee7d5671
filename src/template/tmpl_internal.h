/* Shared by the template module's files: arena, values, tokens, AST. */
#ifndef PLUMB_TEMPLATE_INTERNAL_H
#define PLUMB_TEMPLATE_INTERNAL_H

#include "template/template.h"

#include <stdbool.h>
#include <stdint.h>

/* ---- arena: everything a parse or a render allocates, freed at once ---- */

struct arena_block;

struct arena {
    struct arena_block *head;
    size_t total, limit; /* bytes handed out; refusal above limit */
};

void *arena_alloc(struct arena *a, size_t n);
void arena_free(struct arena *a);
/* A NUL-terminated copy. */
char *arena_strndup(struct arena *a, const char *s, size_t n);

/* ---- values ---- */

enum vkind {
    VK_UNDEF,
    VK_NONE,
    VK_BOOL,
    VK_INT,
    VK_FLOAT,
    VK_STR,
    VK_LIST,
    VK_DICT,
    VK_NS,      /* namespace(): a dict whose attributes can be set */
    VK_MACRO,
    VK_BUILTIN, /* a global function */
};

/* A string. taint marks the bytes that came from user text (the
 * variables given as user_vars: message contents, tools): special tokens
 * are not matched there when the output is tokenized. NULL: none did.
 * Operations carry the marks along (concatenation, slicing, strip,
 * split, replace, case changes); others mark their whole result when any
 * input byte was marked, so user text can never lose its mark. */
struct tstr {
    size_t len;
    const uint8_t *taint;
    char s[]; /* NUL-terminated too */
};

struct value {
    enum vkind k;
    union {
        bool b;
        int64_t i;
        double f;
        const struct tstr *s;
        struct tlist *l;
        struct tdict *d;
        const struct node *macro;
        int builtin;
    } u;
};

struct tlist {
    size_t n, cap;
    struct value *v;
    bool tuple; /* printed as (a, b): tuple literals, items() pairs */
};

struct tdict {
    size_t n, cap;
    struct value *keys, *vals; /* insertion order */
};

/* ---- tokens ---- */

enum tkind {
    TK_TEXT,
    TK_VAR_BEGIN,
    TK_VAR_END,
    TK_BLOCK_BEGIN,
    TK_BLOCK_END,
    TK_NAME,
    TK_STRING,
    TK_INT,
    TK_FLOAT,
    TK_OP,
    TK_EOF,
};

struct token {
    enum tkind kind;
    int line;
    const struct tstr *text; /* TEXT, NAME, STRING (unescaped), OP */
    int64_t i;
    double f;
};

/* ---- syntax tree ---- */

enum nkind {
    /* statements */
    N_TEXT,
    N_OUTPUT,
    N_IF,
    N_FOR,
    N_SET,       /* a = (targets) = expr; attr target when a is set */
    N_SET_BLOCK,
    N_MACRO,
    N_BREAK,
    N_CONTINUE,
    N_BODY,      /* a plain body ({% generation %}) */
    /* expressions */
    N_LIT,
    N_NAME,
    N_ATTR,
    N_ITEM,
    N_SLICE,
    N_CALL,
    N_FILTER,
    N_TEST,
    N_NOT,
    N_NEG,
    N_BINOP,  /* + - * / // % ** ~ */
    N_AND,
    N_OR,
    N_CMP,    /* == != < > <= >= in, not in */
    N_COND,
    N_LIST,
    N_DICT,
    N_TUPLE,
};

struct node {
    enum nkind kind;
    int line;
    char op[4];           /* N_BINOP, N_CMP ("in", "ni" for not in) */
    bool negated;         /* N_TEST: is not */
    bool recursive;       /* unused: reserved for {% for ... recursive %} */
    struct value lit;     /* N_LIT, N_TEXT */
    const char *name;     /* N_NAME, N_ATTR, N_FILTER, N_TEST, N_MACRO, N_SET(_BLOCK) target */
    struct node *a, *b, *c; /* operands / object, key / cond, then, else / slice parts */
    struct node **args;   /* call, filter and test arguments; list and tuple items; dict keys and values interleaved */
    int n_args;
    const char **kw;      /* keyword argument names (call, filter, test) */
    struct node **kw_val;
    int n_kw;
    const char **targets; /* for: loop variables; set: tuple targets; macro: parameter names */
    struct node **defaults; /* macro parameter defaults (NULL when none) */
    int n_targets;
    struct node **body;   /* statements */
    int n_body;
    struct node **else_body;
    int n_else;
};

struct tmpl {
    struct arena arena; /* the tree and its strings */
    struct node **body;
    int n_body;
};

/* ---- shared helpers ---- */

/* Lexes src into tokens (whitespace control and trimming applied). */
int tmpl_lex(struct arena *a, const char *src, size_t len, struct token **out, size_t *n, pb_err *err);
/* Parses tokens into t->body. */
int tmpl_parse_tokens(struct tmpl *t, const struct token *toks, size_t n, pb_err *err);

const struct tstr *tstr_new(struct arena *a, const char *s, size_t n);
/* As tstr_new, with the marks of taint (n flags, may be NULL) or, with
 * all, every byte marked. */
const struct tstr *tstr_new_marked(struct arena *a, const char *s, size_t n, const uint8_t *taint, bool all);
bool tstr_marked(const struct tstr *s);

/* ---- rendering ---- */

/* Output being built (the template's, or a macro's / set block's), with
 * the marks of user text (taint: NULL until a marked byte arrives). */
struct obuf {
    char *p;
    uint8_t *taint;
    size_t n, cap;
};

struct render {
    struct arena a;      /* every value made while rendering */
    pb_err *err;
    struct obuf *out;
    size_t max_output;
    time_t now;
    uint64_t budget;     /* work left: loop iterations, calls, bytes and items processed */
    int depth;           /* macro calls in progress */
    int eval_depth;      /* nested expression evaluations and statement bodies */
};

/* Charges units of work; fails the render when the budget is spent. */
int r_spend(struct render *r, int line, uint64_t units);

/* Status codes besides PB_OK / PB_E*: loop control unwinding. */
enum { FLOW_BREAK = 1, FLOW_CONTINUE = 2 };

/* Fails the render with "template line N: ...". */
int r_fail(struct render *r, int line, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
int obuf_put(struct render *r, struct obuf *o, const char *s, size_t n);
/* Appends with marks: taint (n flags, may be NULL) or all marked. */
int obuf_put_marked(struct render *r, struct obuf *o, const char *s, size_t n, const uint8_t *taint, bool all);
/* Appends bytes [off, off + n) of s with their marks. */
int obuf_put_sub(struct render *r, struct obuf *o, const struct tstr *s, size_t off, size_t n);
void obuf_free(struct obuf *o);
/* The buffer's content as a string value (marks kept). */
int obuf_value(struct render *r, const struct obuf *o, struct value *out);

/* values (value.c) */
struct value v_undef(void);
struct value v_none(void);
struct value v_bool(bool b);
struct value v_int(int64_t i);
struct value v_float(double f);
/* NULL s with n > 0 is an out-of-memory error the caller reports */
struct value v_str(struct render *r, const char *s, size_t n);
/* Bytes [off, off + n) of s, marks kept. */
struct value v_substr(struct render *r, const struct tstr *s, size_t off, size_t n);
struct value v_cstr(struct render *r, const char *s);
struct tlist *list_new(struct render *r, size_t cap);
int list_push(struct render *r, struct tlist *l, struct value v);
struct tdict *dict_new(struct render *r, size_t cap);
/* Sets key (replacing an equal key's value). */
int dict_set(struct render *r, struct tdict *d, struct value key, struct value v);
/* Value for key, or NULL. */
struct value *dict_get(const struct tdict *d, struct value key);
struct value *dict_get_str(const struct tdict *d, const char *key);

bool v_truthy(const struct value *v);
bool v_equal(const struct value *a, const struct value *b);
/* -1, 0, 1; fails for values that have no order. */
int v_compare(struct render *r, int line, const struct value *a, const struct value *b, int *cmp);
const char *v_kind_name(const struct value *v);
/* Appends str(v) (Python's, as Jinja prints values). */
int v_to_str(struct render *r, int line, const struct value *v, struct obuf *o);
/* str(v) as a string value. */
int v_stringify(struct render *r, int line, const struct value *v, struct value *out);
/* Python's repr(). */
int v_repr(struct render *r, int line, const struct value *v, struct obuf *o);
/* json.dumps options: indent < 0 is None; separators as Python's. */
struct json_opts {
    int indent;
    bool sort, ascii;
    const char *item_sep, *key_sep;
};
int v_to_json(struct render *r, int line, const struct value *v, const struct json_opts *jo, struct obuf *o);
/* Converts a JSON value from the caller; with user, its strings are
 * marked as user text. */
int v_from_json(struct render *r, const json_t *j, bool user, struct value *out);

/* UTF-8 helpers: number of code points; byte offset of code point i. */
size_t utf8_count(const char *s, size_t n);
size_t utf8_offset(const char *s, size_t n, size_t i);

/* builtins (builtins.c) */
struct call_args {
    struct value *pos;
    int n_pos;
    const char **kw;
    struct value *kw_val;
    int n_kw;
};

int call_filter(struct render *r, int line, const char *name, const struct value *in, const struct call_args *a,
                struct value *out);
int call_test(struct render *r, int line, const char *name, const struct value *in, const struct call_args *a,
              bool *out);
int call_method(struct render *r, int line, const struct value *obj, const char *name, const struct call_args *a,
                struct value *out);
/* Global functions: id for a name (or -1), and calling one. */
int global_find(const char *name);
int call_global(struct render *r, int line, int id, const struct call_args *a, struct value *out);

#endif
