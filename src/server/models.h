/* The models a server serves (plumb/server.h): names over loaded copies.
 *
 * A name (struct served: an alias, its preset, when it loads and how long
 * it stays) runs on a copy (a GGUF file opened with one set of engine
 * settings); names on one file with the same settings share one copy, so
 * one engine and one set of slots. A copy is unloaded, loading, loaded or
 * unloading. A request takes a reference on its name (models_pick), then
 * a use of the copy while it runs (models_use), which loads the copy
 * first when it is not loaded: one request loads it, others wait for it.
 * Before a load the copy's memory estimate is weighed against the budget
 * (memory_limit, else what was available at start) less what the loaded
 * copies use: idle copies are unloaded, least recently used first, until
 * it fits, or the request gets 503 (model_memory) when even that is not
 * enough. A reaper thread unloads copies idle beyond their keep-alive.
 *
 * The lock: one mutex over the names and every copy's state; loading and
 * unloading (engine_open, engine_close) run outside it, the copy marked
 * loading or unloading meanwhile. A copy is used by a request only while
 * loaded, and unloaded only when no request uses it. Internal to the
 * server module.
 */
#ifndef PLUMB_SERVER_MODELS_H
#define PLUMB_SERVER_MODELS_H

#include "plumb/server.h"
#include "server/metrics.h"
#include "server/oai.h"

#include <jansson.h>

struct models_params {
    struct engine_threads *threads; /* shared by every engine (borrowed) */
    int max_queue;                  /* each engine's queue */
    uint64_t memory_limit;          /* bytes for the models and the process (0: what is available now) */
    bool ignore_memory;             /* no budget at all */
    void (*log)(void *user, const char *line);
    void *log_user;
    void (*on_itl)(void *user, const char *model, double seconds); /* each request's inter-token latencies */
    void *on_itl_user;
};

struct models;
struct served;

int models_create(const struct models_params *p, struct models **out, pb_err *err);
/* Stops the reaper, ends every request (engine_cancel_all); the requests'
 * threads then let go of their references. */
void models_cancel_all(struct models *ms);
/* Frees the names and copies (no request may hold one any more). */
void models_free(struct models *ms);

/* Serves these from now on: names unchanged stay as they are; new or
 * changed ones are added (sharing a copy already there when file and
 * engine settings match); those that go leave when their requests end.
 * Every file must have a memory estimate, and the copies to load at start
 * not loaded yet must fit beside the loaded ones (unless ignore_memory);
 * they are loaded here. All or nothing: on failure nothing changes.
 * reload: log what changed (else what is served). */
int models_set(struct models *ms, const struct server_model *list, int n, bool reload, pb_err *err);

/* The name a request gives (NULL: the only one served), with a reference;
 * 200, or 400 (none given, several served) or 404 with the error in *e. */
int models_pick(struct models *ms, const char *name, struct served **out, struct oai_error *e);
void models_unref(struct models *ms, struct served *m);
const char *models_id(const struct served *m);
/* A use of m's copy for a request, loading it when it is not loaded
 * (waiting up to wait_s for another's load): 200 and *om filled (the
 * name, the engine, the preset), or 503 with the reason in *e
 * (model_memory: it does not fit, model_load_failed, model_loading: still
 * loading after wait_s). *retry_after: seconds to suggest. */
int models_use(struct models *ms, struct served *m, double wait_s, struct oai_model *om, struct oai_error *e,
               int *retry_after);
/* The request ended: its keep_alive (has_keep_alive) or its name's sets
 * how long the copy stays after this. */
void models_done(struct models *ms, struct served *m, bool has_keep_alive, double keep_alive_s);

/* GET /v1/models: the list of every name (id NULL), or the one named id
 * (NULL when there is none). */
json_t *models_openai(struct models *ms, const char *id);
/* GET /v1/plumb/models: {"models": [...], "memory": {...}}. */
json_t *models_status(struct models *ms);
/* POST /v1/plumb/models/NAME/load and .../unload: 200 and the name's
 * object in *out, 404 (no such name) or 503 (load) with *e. An unload of
 * a copy requests use takes effect when they end. */
int models_load(struct models *ms, const char *name, double wait_s, json_t **out, struct oai_error *e,
                int *retry_after);
int models_unload(struct models *ms, const char *name, json_t **out, struct oai_error *e);

/* The /metrics gauges: every loaded copy once in the totals, each name
 * with its copy's figures (ids: the names, sources: what the
 * configuration named, digests: "sha256:HEX" of a store's file or ""; per[i]
 * points there). */
void models_gauges(struct models *ms, struct metrics_gauges *g, struct metrics_model_gauges *per,
                   char (*ids)[128], char (*sources)[1024], char (*digests)[72], int max);

#endif
