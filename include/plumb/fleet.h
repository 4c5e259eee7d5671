/* plumb fleet: the sites a technician looks after, and what each runs.
 *
 * The list lives in the store's home as fleet.json (mode 0600, written
 * whole or not at all):
 *
 *   {"sites":[{"name":"acme","url":"https://llm.acme.example:8080","api_key_file":"/home/t/keys/acme"}]}
 *
 * A site's key file holds the site's admin key in plumb serve's format
 * (KEY, ID KEY or ID KEY admin per line); the list keeps its path, never
 * the key, and the key is read only when the site is asked.
 *
 * fleet_poll asks every site at once (libcurl's multi interface, one
 * thread for all) for GET /v1/plumb/status, /usage and /doctor, each
 * request bounded by the same timeout (connection and answer), so that a
 * slow or dead site costs the timeout, never the others' time.
 */
#ifndef PLUMB_FLEET_H
#define PLUMB_FLEET_H

#include "plumb/base.h"

#include <stdbool.h>
#include <stddef.h>

#define FLEET_DEFAULT_TIMEOUT_S 5.0
#define FLEET_MAX_SITES 256
#define FLEET_URL_MAX 1024
#define FLEET_PATH_MAX 1024

struct fleet_site {
    char name[72];                 /* 1-64 of letters, digits, . _ : - (a model alias's rule) */
    char url[FLEET_URL_MAX];       /* http(s)://HOST[:PORT][/PATH], without a trailing '/' */
    char key_file[FLEET_PATH_MAX]; /* absolute path, or "" for a site without keys */
};

struct fleet {
    struct fleet_site *sites;
    int n;
};

/* The list's file: the store's home (store_default_home)/fleet.json. */
int fleet_default_path(char *buf, size_t size, pb_err *err);
/* Reads the list; a missing file is an empty list. PB_EFORMAT names what
 * is wrong in a damaged one. fleet_free frees what it read. */
int fleet_load(const char *path, struct fleet *f, pb_err *err);
void fleet_free(struct fleet *f);
/* Writes the list (mode 0600, its folder made when missing). */
int fleet_save(const char *path, const struct fleet *f, pb_err *err);

/* PB_EINVAL, saying why, unless name is a valid site name (1-64 of
 * letters, digits, . _ : -, starting with a letter or digit: a model
 * alias's rule) and url an http or https URL (HOST[:PORT][/PATH]). */
int fleet_site_valid(const char *name, const char *url, pb_err *err);
/* Adds a site: name checked (PB_EINVAL; one that exists is PB_EINVAL
 * too), url parsed strictly (http or https; stored without a trailing
 * '/'), key_file (NULL: none) made absolute and checked to hold a key. */
int fleet_add(struct fleet *f, const char *name, const char *url, const char *key_file, pb_err *err);
/* Removes a site; PB_ENOTFOUND when there is none of that name. */
int fleet_rm(struct fleet *f, const char *name, pb_err *err);

/* The key of a key file as a client sends it: the first line's key (KEY,
 * ID KEY or ID KEY admin; empty lines and # comments skipped), preferring
 * the first line with the admin flag. PB_EINVAL when the file holds none. */
int fleet_read_key(const char *path, char *key, size_t size, pb_err *err);

/* What each site says, as a JSON array (jansson json_t, a new reference)
 * in the list's order, one object per site:
 *
 *   {"name","url","reachable":bool,"error":null|"why","elapsed_s",
 *    "version","instance_id","ready","uptime_s",
 *    "models":[{"id","source","digest":"sha256:HEX"|null,"running","waiting"}],
 *    "load":{"slots","running","waiting","tokens_per_s_1m","tokens_per_s_5m"},
 *    "usage_today":{"date":"YYYY-MM-DD","requests","prompt_tokens","completion_tokens","total_tokens"}|null,
 *    "doctor":{"status":"ok|warnings|errors","errors","warnings"}|null,
 *    "problems":["usage: ...", ...]}
 *
 * reachable is whether /v1/plumb/status answered 200 (else error says
 * why: the connection's error, "no answer within S s", "HTTP 401: ...");
 * usage_today (the site's by_day row of its own UTC date) and doctor are
 * null with the reason in problems when their report failed. full false
 * asks only for the status (models and load). Each request is given
 * timeout_s in all. */
struct json_t *fleet_poll(const struct fleet *f, double timeout_s, bool full, pb_err *err);

/* Which sites serve model (NAME or NAME:TAG) and with which digest, from
 * fleet_poll's answers. A served model matches when the source its
 * configuration named is that store name (any tag when none is given), or
 * its id in the API is model. A new reference:
 *
 *   {"model","sites":[{"name","url","reachable","error","served":[{"id","source","digest"}]}],
 *    "digests":[{"digest":"sha256:HEX"|null,"sites":[NAME...]}],
 *    "not_served":[NAME...],"unreachable":[NAME...]}
 *
 * PB_EINVAL when model is not a valid name. */
struct json_t *fleet_check(const struct json_t *sites, const char *model, pb_err *err);

#endif
