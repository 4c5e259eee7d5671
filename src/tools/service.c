/* The systemd unit of plumb serve (service.h). */
#include "plumb/service.h"
#include "base/err.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

/* An absolute path with nothing a unit file would read otherwise:
 * whitespace (separates arguments), quotes, '%' (specifiers), '$', ';',
 * '\\' and control characters. */
static int check_path(const char *what, const char *p, pb_err *err)
{
    if (!p || p[0] != '/')
        return pb_fail(err, PB_EINVAL, "the %s must be an absolute path (got '%s')", what, p ? p : "");
    for (const unsigned char *c = (const unsigned char *)p; *c; c++)
        if (*c < 0x21 || *c == 0x7f || strchr("\"'%$;\\", *c))
            return pb_fail(err, PB_EINVAL, "the %s '%s' has a character a unit file cannot hold ('%c')", what, p,
                           *c >= 0x21 ? *c : '?');
    return PB_OK;
}

const char *service_hidden(const char *path)
{
    static const struct {
        const char *dir, *by;
    } hidden[] = {{"/home", "ProtectHome"}, {"/root", "ProtectHome"}, {"/run/user", "ProtectHome"},
                  {"/tmp", "PrivateTmp"},   {"/var/tmp", "PrivateTmp"}};
    for (size_t i = 0; path && i < sizeof hidden / sizeof hidden[0]; i++) {
        size_t n = strlen(hidden[i].dir);
        if (!strncmp(path, hidden[i].dir, n) && (path[n] == '/' || path[n] == 0))
            return hidden[i].by;
    }
    return NULL;
}

int service_unit(const struct service_params *p, char *buf, size_t size, pb_err *err)
{
    int rc;
    if ((rc = check_path("plumb binary", p->binary, err)) || (rc = check_path("configuration file", p->config, err)) ||
        (rc = check_path("store folder", p->store, err)) ||
        (p->state_dir && (rc = check_path("state folder", p->state_dir, err))))
        return rc;
    if (p->user) {
        for (const char *c = p->user; *c; c++)
            if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') || *c == '_' ||
                  *c == '-'))
                return pb_fail(err, PB_EINVAL, "'%s' is not a user name", p->user);
        if (!*p->user)
            return pb_fail(err, PB_EINVAL, "an empty user name");
        if (!strcmp(p->user, "nobody"))
            return pb_fail(err, PB_EINVAL, "'nobody' owns no files and is shared by other services (systemd calls "
                           "it unsafe): create a user for plumb, e.g. useradd --system plumb");
    }
    const bool root = !p->user || !strcmp(p->user, "root");
    char user[160] = "";
    if (!root)
        snprintf(user, sizeof user, "User=%s\nGroup=%s\n", p->user, p->user);
    char rw[2200];
    snprintf(rw, sizeof rw, "%s%s%s", p->store, p->state_dir ? " " : "", p->state_dir ? p->state_dir : "");
    int n = snprintf(buf, size,
                     "# plumb serve as a service (written by plumb service install)\n"
                     "[Unit]\n"
                     "Description=plumb serve: an OpenAI-compatible local LLM API\n"
                     "After=network-online.target\n"
                     "Wants=network-online.target\n"
                     "\n"
                     "[Service]\n"
                     "Type=simple\n"
                     "ExecStart=%s serve --config %s\n"
                     "ExecReload=/bin/kill -HUP $MAINPID\n"
                     "Restart=on-failure\n"
                     "RestartSec=2\n"
                     "%s"
                     "Environment=PLUMB_HOME=%s\n"
                     "StandardOutput=journal\n"
                     "StandardError=journal\n"
                     "SyslogIdentifier=plumb\n"
                     "KillSignal=SIGTERM\n"
                     "TimeoutStopSec=%d\n"
                     "NoNewPrivileges=yes\n"
                     "ProtectSystem=strict\n"
                     "ProtectHome=yes\n"
                     "PrivateTmp=yes\n"
                     "ProtectKernelTunables=yes\n"
                     "ProtectKernelModules=yes\n"
                     "ProtectControlGroups=yes\n"
                     "RestrictSUIDSGID=yes\n"
                     "LockPersonality=yes\n"
                     "ReadWritePaths=%s\n"
                     "\n"
                     "[Install]\n"
                     "WantedBy=multi-user.target\n",
                     p->binary, p->config, user, p->store, (int)(p->drain_timeout_s + 15.5), rw);
    if (n < 0 || (size_t)n >= size)
        return pb_fail(err, PB_ERANGE, "the unit does not fit %zu bytes", size);
    return PB_OK;
}
