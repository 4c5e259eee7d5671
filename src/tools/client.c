/* Requests to a running plumb serve's API (service.h: service_call),
 * through libcurl. */
#include "plumb/service.h"

#include "base/err.h"
#include "base/sbuf.h"
#include "tools/url.h"

#include <curl/curl.h>
#include <stdio.h>
#include <string.h>

#define MAX_ANSWER (16u << 20)

static size_t on_body(char *data, size_t size, size_t n, void *user)
{
    struct sbuf *b = user;
    if (b->len + size * n > MAX_ANSWER || sbuf_add(b, data, size * n))
        return 0; /* libcurl stops: CURLE_WRITE_ERROR */
    return size * n;
}

int service_call(const char *url, const char *api_key, const char *method, const char *path, double timeout_s,
                 int *status, json_t **body, pb_err *err)
{
    *status = 0;
    *body = NULL;
    struct url u;
    int rc = url_parse(url, "server", "http,https", &u, err);
    if (rc)
        return rc;
    char host[300], full[2048];
    snprintf(full, sizeof full, "%s://%s:%d%s", u.scheme, url_host_bracketed(&u, host, sizeof host), u.port, path);
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        return pb_fail(err, PB_EIO, "libcurl cannot start");
    CURL *h = curl_easy_init();
    if (!h) {
        curl_global_cleanup();
        return pb_fail(err, PB_ENOMEM, "out of memory");
    }
    struct curl_slist *headers = NULL;
    char auth[400];
    if (api_key) {
        snprintf(auth, sizeof auth, "Authorization: Bearer %s", api_key);
        headers = curl_slist_append(headers, auth);
    }
    headers = curl_slist_append(headers, "Accept: application/json");
    struct sbuf b = {0};
    char errbuf[CURL_ERROR_SIZE] = "";
    curl_easy_setopt(h, CURLOPT_URL, full);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, (long)(timeout_s < 10 ? timeout_s * 1000 : 10000));
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)(timeout_s * 1000));
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &b);
    if (!strcmp(method, "POST")) {
        curl_easy_setopt(h, CURLOPT_POST, 1L);
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, "");
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, 0L);
    } else if (strcmp(method, "GET") != 0) {
        curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
    }
    CURLcode cc = curl_easy_perform(h);
    long code = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
    curl_slist_free_all(headers);
    curl_easy_cleanup(h);
    curl_global_cleanup();
    if (cc == CURLE_COULDNT_CONNECT)
        rc = pb_fail(err, PB_EIO, "nothing answers at %s (is plumb serve running there? --url names another)", url);
    else if (cc == CURLE_OPERATION_TIMEDOUT)
        rc = pb_fail(err, PB_EIO, "%s did not answer within %.0f s", url, timeout_s);
    else if (cc != CURLE_OK)
        rc = pb_fail(err, PB_EIO, "%s: %s", url, errbuf[0] ? errbuf : curl_easy_strerror(cc));
    if (!rc) {
        *status = (int)code;
        *body = b.len ? json_loadb(b.data, b.len, 0, NULL) : NULL;
    }
    sbuf_free(&b);
    return rc;
}
