/* plumb service: install plumb serve as a systemd service, and reload it. */
#define _GNU_SOURCE
#include "cli.h"

#include "plumb/config.h"
#include "plumb/service.h"
#include "plumb/store.h"

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <pwd.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static void help(void)
{
    printf("Usage: plumb service install [--config FILE] [--user NAME] [--print] [--unit-dir DIR]\n"
           "       plumb service reload [--config FILE] [--pid-file FILE]\n"
           "       plumb service lb --kind haproxy|nginx --backend URL... (see lb --help)\n"
           "       plumb service k8s --config FILE --mirror URL [--replicas N] (see k8s --help)\n"
           "\n"
           "install writes a systemd unit that runs 'plumb serve --config FILE' (restart on\n"
           "failure, journald logging, NoNewPrivileges, ProtectSystem=strict, ProtectHome,\n"
           "PrivateTmp, writable only in the store and state folders), then reloads\n"
           "systemd. --print prints the unit instead. The configuration file is checked\n"
           "first; its [server] store (else $PLUMB_HOME) is the store. Refused: a --user\n"
           "that does not exist; no store named while this user's store (where plumb pull\n"
           "put the models) is not /var/lib/plumb; plumb, the configuration, the store,\n"
           "the key file, the pid file or a model file under /home, /root or /tmp, which\n"
           "the unit's ProtectHome and PrivateTmp hide; a model name not in the store.\n"
           "\n"
           "reload makes a running server re-read its configuration (SIGHUP): to the pid in\n"
           "--pid-file or the configuration's pid_file, else through 'systemctl reload'.\n"
           "\n"
           "Options:\n"
           "      --config FILE     the configuration (default /etc/plumb/plumb.ini)\n"
           "      --user NAME       the user the service runs as (default root)\n"
           "      --unit-dir DIR    where to write plumb.service (default /etc/systemd/system)\n"
           "      --print           print the unit, write nothing\n"
           "      --pid-file FILE   reload: the server's pid file\n"
           "  -h, --help            this help\n"
           "\n"
           "Examples:\n"
           "  plumb service install --config /etc/plumb/plumb.ini --user plumb\n"
           "  plumb service reload\n");
}

static int run_systemctl(const char *verb, const char *unit)
{
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        execlp("systemctl", "systemctl", verb, unit, (char *)NULL);
        _exit(127);
    }
    int st;
    waitpid(pid, &st, 0);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static int install(const struct config *cfg, const char *config_abs, const char *user, const char *unit_dir,
                   bool print)
{
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0)
        return cli_error("service", "cannot find plumb's own path: %s", strerror(errno));
    self[n] = '\0';
    if (user && strcmp(user, "root") && !getpwnam(user))
        return cli_error("service", "there is no user '%s' here: create it (useradd --system %s) or give another "
                         "--user", user, user);
    /* the store: the configuration's, else PLUMB_HOME; without either, the
     * service would use /var/lib/plumb while plumb pull and doctor use this
     * user's default store, and the models pulled would not be found */
    const char *home = getenv("PLUMB_HOME");
    const char *store = cfg->store[0] ? cfg->store : home && *home ? home : "/var/lib/plumb";
    char mine[PATH_MAX];
    pb_err err = {0};
    if (!cfg->store[0] && !(home && *home) && store_default_home(mine, sizeof mine, &err) == PB_OK &&
        strcmp(mine, store))
        return cli_error("service", "%s names no store: the service would use %s, while plumb pull and doctor use %s "
                         "(PLUMB_HOME is not set); add 'store = %s' to its [server] section and pull the models "
                         "there (PLUMB_HOME=%s plumb pull ...)", config_abs, store, mine, store, store);
    char state[PATH_MAX] = "";
    if (cfg->pid_file[0]) {
        snprintf(state, sizeof state, "%s", cfg->pid_file);
        char *slash = strrchr(state, '/');
        if (slash && slash != state)
            *slash = '\0';
    }
    /* what the unit's sandbox hides the service cannot use */
    const struct {
        const char *what, *path;
    } paths[] = {{"plumb itself", self},           {"the configuration", config_abs}, {"the store", store},
                 {"the pid file", cfg->pid_file}, {"the API key file", cfg->api_key_file}};
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
        const char *by = service_hidden(paths[i].path);
        if (by)
            return cli_error("service", "%s is at %s, which the service cannot see (%s=yes hides it): %s",
                             paths[i].what, paths[i].path, by,
                             i == 0 ? "install plumb first, e.g. 'make install' (to /usr/local/bin)"
                                    : "move it, e.g. to /etc/plumb or /var/lib/plumb, and say so in the configuration");
    }
    for (int i = 0; i < cfg->n_models; i++) {
        const struct config_model *m = &cfg->models[i];
        const char *by = service_hidden(m->source);
        if (by)
            return cli_error("service", "[model %s] source %s is where the service cannot see it (%s=yes hides it): "
                             "pull it into the store (plumb pull %s --name NAME) and name it instead", m->alias,
                             m->source, by, m->source);
        /* a store name must be in the store the service uses */
        char path[PATH_MAX];
        if (!strchr(m->source, '/') && store_resolve(store, m->source, path, sizeof path, NULL, &err))
            return cli_error("service", "[model %s] %s (plumb pull it there: PLUMB_HOME=%s plumb pull SOURCE --name "
                             "%s)", m->alias, err.msg, store, m->source);
    }
    struct service_params sp = {
        .binary = self,
        .config = config_abs,
        .user = user,
        .store = store,
        .state_dir = state[0] ? state : NULL,
        .drain_timeout_s = cfg->drain_timeout_s,
    };
    char unit[8192];
    if (service_unit(&sp, unit, sizeof unit, &err))
        return cli_error("service", "%s", err.msg);
    if (print) {
        fputs(unit, stdout);
        return CLI_OK;
    }
    char path[PATH_MAX], tmp[PATH_MAX + 8];
    snprintf(path, sizeof path, "%s/plumb.service", unit_dir);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    if (pb_check_output(path, &err))
        return cli_error("service", "%s", err.msg);
    FILE *f = fopen(tmp, "w");
    if (!f)
        return cli_error("service", "cannot write %s: %s (as root?)", tmp, strerror(errno));
    bool ok = fputs(unit, f) >= 0;
    ok &= fclose(f) == 0;
    if (!ok || rename(tmp, path) != 0) {
        unlink(tmp);
        return cli_error("service", "cannot write %s: %s", path, strerror(errno));
    }
    printf("wrote %s\n", path);
    struct stat st;
    if (stat("/run/systemd/system", &st) == 0 && !strcmp(unit_dir, "/etc/systemd/system")) {
        if (run_systemctl("daemon-reload", NULL) != 0)
            return cli_error("service", "systemctl daemon-reload failed");
        printf("systemd reloaded; start it with: systemctl enable --now plumb.service\n");
    } else {
        printf("systemd is not running here (or the unit is elsewhere): reload it and enable the unit by hand\n");
    }
    return CLI_OK;
}

static int reload(const struct config *cfg, const char *pid_file)
{
    const char *pf = pid_file ? pid_file : cfg->pid_file[0] ? cfg->pid_file : NULL;
    if (pf) {
        char *text = NULL;
        pb_err err = {0};
        long pid = 0;
        if (pb_read_small(pf, 64, &text, NULL, &err) == PB_OK)
            pid = strtol(text, NULL, 10);
        free(text);
        if (pid <= 1)
            return cli_error("service", "%s: no process id in it (is plumb serve running?)%s%s", pf,
                             err.msg[0] ? ": " : "", err.msg);
        if (kill((pid_t)pid, SIGHUP) != 0)
            return cli_error("service", "cannot signal process %ld from %s: %s", pid, pf, strerror(errno));
        printf("sent SIGHUP to plumb serve (pid %ld)\n", pid);
        return CLI_OK;
    }
    int rc = run_systemctl("reload", "plumb.service");
    if (rc != 0)
        return cli_error("service", "systemctl reload plumb.service failed (%d); give --pid-file for a server "
                         "started by hand", rc);
    printf("plumb.service reloaded\n");
    return CLI_OK;
}

int cmd_service(int argc, char **argv)
{
    enum { OPT_CONFIG = 1000, OPT_USER, OPT_UNITDIR, OPT_PRINT, OPT_PID };
    static const struct option longopts[] = {
        {"config", required_argument, 0, OPT_CONFIG}, {"user", required_argument, 0, OPT_USER},
        {"unit-dir", required_argument, 0, OPT_UNITDIR}, {"print", no_argument, 0, OPT_PRINT},
        {"pid-file", required_argument, 0, OPT_PID},  {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    /* the action first; options before one (--help) are parsed as install's */
    const char *verb = argc >= 2 && argv[1][0] != '-' ? argv[1] : NULL;
    const int off = verb ? 1 : 0;
    if (verb && !strcmp(verb, "lb"))
        return cmd_service_lb(argc - 1, argv + 1);
    if (verb && !strcmp(verb, "k8s"))
        return cmd_service_k8s(argc - 1, argv + 1);
    if (verb && strcmp(verb, "install") && strcmp(verb, "reload"))
        return cli_usage_error("service", "unknown action '%s' (install, reload, lb, k8s)", verb);
    const char *config = "/etc/plumb/plumb.ini", *user = NULL, *unit_dir = "/etc/systemd/system", *pid_file = NULL;
    bool print = false;
    int c;
    struct cli_parser par = {.cmd = "service", .shortopts = "h", .longopts = longopts, .files = "config,unit-dir,pid-file"};
    while ((c = cli_getopt(argc - off, argv + off, &par)) != -1) { /* after the action */
        switch (c) {
        case OPT_CONFIG: config = optarg; break;
        case OPT_USER: user = optarg; break;
        case OPT_UNITDIR: unit_dir = optarg; break;
        case OPT_PRINT: print = true; break;
        case OPT_PID: pid_file = optarg; break;
        case 'h': help(); return CLI_OK;
        default: return CLI_USAGE; /* cli_getopt said why */
        }
    }
    if (!verb)
        return cli_usage_error("service", "no action given (install, reload, lb, k8s)");
    if (optind < argc - off)
        return cli_usage_error("service", "unexpected argument '%s'", argv[optind + off]);
    char config_abs[PATH_MAX];
    if (!realpath(config, config_abs))
        return cli_error("service", "%s: %s", config, strerror(errno));
    struct config cfg;
    config_defaults(&cfg);
    pb_err err = {0};
    if (config_load(config_abs, &cfg, &err))
        return cli_error("service", "%s", err.msg);
    if (!strcmp(verb, "install")) {
        if (cfg.n_models == 0)
            return cli_error("service", "%s: no [model NAME] section: the service would serve nothing", config_abs);
        return install(&cfg, config_abs, user, unit_dir, print);
    }
    return reload(&cfg, pid_file);
}
