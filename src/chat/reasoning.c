/* Separating a reasoning model's thinking from its answer as the text
 * streams in (chat.h). Both styles are small state machines over a buffer
 * that holds back only what a marker could still complete (and, inside a
 * thinking block, the newlines that may turn out to end it). */
#include "chat/chat.h"

#include <stdlib.h>
#include <string.h>

enum state {
    S_OPEN,        /* think: before anything; "<think>" may still come */
    S_THINK_START, /* think: just inside the block (its leading newlines dropped) */
    S_THINK,       /* think: in the block */
    S_ANSWER_START,/* think: just after </think> (its newlines dropped) */
    S_ANSWER,      /* everything from here is answer */
    S_HEADER,      /* harmony: a message header, up to <|message|> */
    S_BODY,        /* harmony: a message's text, up to <|end|> */
};

struct chat_reasoning {
    enum chat_reasoning_style style;
    enum state state;
    enum chat_part body; /* harmony: the current message's part */
    char *buf;           /* held back */
    size_t len, cap;
};

static const char THINK_OPEN[] = "<think>", THINK_CLOSE[] = "</think>";
static const char H_MESSAGE[] = "<|message|>", H_ANALYSIS[] = "<|channel|>analysis";
/* what ends a harmony message's text (<|start|> is kept: it begins the next header) */
static const char *const h_ends[] = {"<|end|>", "<|return|>", "<|call|>", "<|start|>"};
#define N_ENDS (sizeof h_ends / sizeof h_ends[0])
/* headers longer than this without <|message|> are taken as plain text */
#define MAX_HEADER 256

int chat_reasoning_create(enum chat_reasoning_style style, bool in_reasoning, struct chat_reasoning **out,
                          pb_err *err)
{
    *out = calloc(1, sizeof **out);
    if (!*out)
        return pb_fail(err, PB_ENOMEM, "out of memory");
    (*out)->style = style;
    (*out)->state = style == CHAT_REASONING_HARMONY ? S_HEADER
                    : style == CHAT_REASONING_THINK ? (in_reasoning ? S_THINK_START : S_OPEN)
                                                    : S_ANSWER;
    return PB_OK;
}

void chat_reasoning_free(struct chat_reasoning *r)
{
    if (r) {
        free(r->buf);
        free(r);
    }
}

/* The first occurrence of needle in [s, s + n), or NULL. */
static const char *find(const char *s, size_t n, const char *needle)
{
    const size_t k = strlen(needle);
    for (size_t i = 0; i + k <= n; i++)
        if (!memcmp(s + i, needle, k))
            return s + i;
    return NULL;
}

/* The length of the longest suffix of [s, s + n) that is a proper prefix of
 * needle: text a later piece may complete into the marker. */
static size_t partial(const char *s, size_t n, const char *needle)
{
    const size_t k = strlen(needle);
    for (size_t m = k - 1 < n ? k - 1 : n; m > 0; m--)
        if (!memcmp(s + n - m, needle, m))
            return m;
    return 0;
}

static void emit(chat_part_fn fn, void *user, enum chat_part part, const char *s, size_t n)
{
    if (n > 0)
        fn(user, part, s, n);
}

/* Drops the first n held bytes. */
static void consume(struct chat_reasoning *r, size_t n)
{
    memmove(r->buf, r->buf + n, r->len - n);
    r->len -= n;
}

/* One step of the machine over the held text; false when it needs more. */
static bool step(struct chat_reasoning *r, chat_part_fn fn, void *user)
{
    char *b = r->buf;
    const size_t n = r->len;
    const char *at;
    size_t i = 0;
    switch (r->state) {
    case S_OPEN: /* leading whitespace, then "<think>" or the answer */
        while (i < n && (b[i] == ' ' || b[i] == '\n' || b[i] == '\r' || b[i] == '\t'))
            i++;
        if (n - i >= sizeof THINK_OPEN - 1 && !memcmp(b + i, THINK_OPEN, sizeof THINK_OPEN - 1)) {
            consume(r, i + sizeof THINK_OPEN - 1);
            r->state = S_THINK_START;
            return true;
        }
        if (i == n || (n - i < sizeof THINK_OPEN - 1 && !memcmp(b + i, THINK_OPEN, n - i)))
            return false; /* all whitespace, or the start of "<think>" */
        r->state = S_ANSWER;
        return true;
    case S_THINK_START:
    case S_ANSWER_START:
        while (i < n && b[i] == '\n')
            i++;
        consume(r, i);
        if (r->len == 0)
            return false;
        r->state = r->state == S_THINK_START ? S_THINK : S_ANSWER;
        return true;
    case S_THINK: {
        if ((at = find(b, n, THINK_CLOSE))) {
            size_t end = (size_t)(at - b);
            while (end > 0 && b[end - 1] == '\n')
                end--;
            emit(fn, user, CHAT_PART_REASONING, b, end);
            consume(r, (size_t)(at - b) + sizeof THINK_CLOSE - 1);
            r->state = S_ANSWER_START;
            return true;
        }
        size_t keep = n - partial(b, n, THINK_CLOSE);
        while (keep > 0 && b[keep - 1] == '\n')
            keep--; /* may be the newlines before </think> */
        emit(fn, user, CHAT_PART_REASONING, b, keep);
        consume(r, keep);
        return false;
    }
    case S_ANSWER:
        emit(fn, user, CHAT_PART_ANSWER, b, n);
        r->len = 0;
        return false;
    case S_HEADER:
        if ((at = find(b, n, H_MESSAGE))) {
            r->body = find(b, (size_t)(at - b), H_ANALYSIS) ? CHAT_PART_REASONING : CHAT_PART_ANSWER;
            /* a message to a recipient (a tool call: "to=functions.NAME")
             * keeps its header in the answer, for the tool-call parser */
            if (r->body == CHAT_PART_ANSWER && find(b, (size_t)(at - b), "to="))
                emit(fn, user, CHAT_PART_ANSWER, b, (size_t)(at - b) + sizeof H_MESSAGE - 1);
            consume(r, (size_t)(at - b) + sizeof H_MESSAGE - 1);
            r->state = S_BODY;
            return true;
        }
        if (n > MAX_HEADER || (n > 0 && b[0] != '<') || (n > 1 && b[1] != '|')) {
            /* text without a header: an answer */
            r->body = CHAT_PART_ANSWER;
            r->state = S_BODY;
            return true;
        }
        return false;
    case S_BODY: {
        const char *first = NULL;
        size_t first_k = 0, hold = 0;
        for (size_t e = 0; e < N_ENDS; e++) {
            const char *f = find(b, n, h_ends[e]);
            if (f && (!first || f < first)) {
                first = f;
                first_k = strlen(h_ends[e]);
            }
            size_t p = partial(b, n, h_ends[e]);
            hold = p > hold ? p : hold;
        }
        if (first) {
            emit(fn, user, r->body, b, (size_t)(first - b));
            const bool start = !memcmp(first, "<|start|>", first_k);
            consume(r, (size_t)(first - b) + (start ? 0 : first_k));
            r->state = S_HEADER;
            return true;
        }
        emit(fn, user, r->body, b, n - hold);
        consume(r, n - hold);
        return false;
    }
    }
    return false;
}

void chat_reasoning_feed(struct chat_reasoning *r, const char *text, size_t len, chat_part_fn fn, void *user)
{
    if (len == 0)
        return;
    if (r->len + len > r->cap) {
        size_t cap = r->cap ? r->cap : 64;
        while (cap < r->len + len)
            cap *= 2;
        char *b = realloc(r->buf, cap);
        if (!b) { /* out of memory: give the text out as it is rather than lose it */
            emit(fn, user, CHAT_PART_ANSWER, r->buf, r->len);
            emit(fn, user, CHAT_PART_ANSWER, text, len);
            r->len = 0;
            return;
        }
        r->buf = b;
        r->cap = cap;
    }
    memcpy(r->buf + r->len, text, len);
    r->len += len;
    while (step(r, fn, user))
        ;
}

void chat_reasoning_finish(struct chat_reasoning *r, chat_part_fn fn, void *user)
{
    switch (r->state) {
    case S_THINK:
    case S_THINK_START: {
        size_t end = r->len;
        while (end > 0 && r->buf[end - 1] == '\n')
            end--;
        emit(fn, user, CHAT_PART_REASONING, r->buf, end);
        break;
    }
    case S_HEADER: /* an unfinished header: text only when it holds no markup */
        if (!find(r->buf, r->len, "<|"))
            emit(fn, user, CHAT_PART_ANSWER, r->buf, r->len);
        break;
    case S_BODY:
        emit(fn, user, r->body, r->buf, r->len);
        break;
    case S_OPEN:
    case S_ANSWER:
        emit(fn, user, CHAT_PART_ANSWER, r->buf, r->len);
        break;
    case S_ANSWER_START:
        break;
    }
    r->len = 0;
}

/* Whether the prompt leaves a thinking block open: its last "<think>"
 * comes after its last "</think>". */
static bool opens_thinking(const char *p, size_t n)
{
    const char *open = NULL, *close = NULL, *at;
    for (const char *s = p; (at = find(s, n - (size_t)(s - p), THINK_OPEN)); s = at + 1)
        open = at;
    for (const char *s = p; (at = find(s, n - (size_t)(s - p), THINK_CLOSE)); s = at + 1)
        close = at;
    return open && (!close || close < open);
}

void chat_start_of(const struct chat *c, const char *prompt, size_t prompt_len, struct chat_start *out)
{
    out->style = chat_reasoning_style(c);
    out->in_reasoning = out->style == CHAT_REASONING_THINK && opens_thinking(prompt, prompt_len);
}

int chat_reasoning_open(const struct chat *c, const char *prompt, size_t prompt_len, struct chat_reasoning **out,
                        pb_err *err)
{
    struct chat_start st;
    chat_start_of(c, prompt, prompt_len, &st);
    return chat_reasoning_create(st.style, st.in_reasoning, out, err);
}
