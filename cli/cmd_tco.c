/* plumb tco: cost per million tokens on premise against a cloud API,
 * break-even volume and time, a sensitivity table and a chart. */
#define _GNU_SOURCE
#include "cli.h"

#include "plumb/plan.h"
#include "plumb/store.h"
#include "plumb/survey.h"

#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

static void help(void)
{
    printf("Usage: plumb tco [OPTIONS]\n"
           "\n"
           "Compares running models on premise with a cloud API: cost per million\n"
           "tokens on each side, the monthly costs, the break-even volume and the months\n"
           "until the hardware has paid for itself, and how these move when the main\n"
           "inputs change. Every input is shown in the report. A chart of the cumulative\n"
           "costs is written as SVG (and PNG when asked).\n"
           "\n"
           "Hardware (a catalog device, or explicit figures; explicit ones override):\n"
           "      --device ID        a device of 'plumb plan --list-devices', or 'this' (with\n"
           "                         --capex and --power)\n"
           "      --capex X          purchase price\n"
           "      --extra-capex X    the rest of the machine, installation (default 0)\n"
           "      --power P          draw under load: W or kW (e.g. 450, 450W, 0.45kW)\n"
           "      --idle-power P     draw when idle (default a quarter of --power)\n"
           "Running it:\n"
           "      --kwh-price X      electricity price per kWh (default 0.30)\n"
           "      --utilisation U    share of the time under load: 0..1 or a percentage\n"
           "                         (default 0.5)\n"
           "      --years N          amortisation (default 3)\n"
           "      --upkeep-hours H   hours of upkeep a month (default 4)\n"
           "      --upkeep-rate X    cost of an hour of upkeep (default 60)\n"
           "Volume and the API:\n"
           "      --tokens-in N      input tokens a day, with k, M or G (default 2M)\n"
           "      --tokens-out N     output tokens a day (default 500k)\n"
           "      --from-usage       the volume plumb serve recorded in the store (plumb\n"
           "                         usage): its tokens a day over the time it covers\n"
           "      --since DATE       with --from-usage: from DATE on (YYYY-MM-DD, or a span\n"
           "                         back from now like 30d); default: from the first\n"
           "                         recorded request\n"
           "      --api ID           a price point of --list-apis (default gpt-4o-mini)\n"
           "      --api-in X         API price per million input tokens (overrides)\n"
           "      --api-out X        API price per million output tokens (overrides)\n"
           "Capacity check (optional):\n"
           "      --model ID         a catalog model: can the device serve the volume?\n"
           "      --quant Q          its quantization (default: plan's recommendation)\n"
           "Output:\n"
           "      --svg FILE         the chart (default plumb-tco.svg)\n"
           "      --png FILE         the chart as PNG too\n"
           "      --no-chart         no chart\n"
           "      --months N         the chart's span (default: the amortisation, or past\n"
           "                         the break-even)\n"
           "      --currency C       label for money (default USD: the catalog's prices)\n"
           "      --catalog DIR      catalog files to use instead of the built-in ones\n"
           "      --list-apis        list the API price points\n"
           "      --json             print everything as JSON\n"
           "  -h, --help             this help\n"
           "\n"
           "Examples:\n"
           "  plumb tco --device rtx-4090 --tokens-in 5M --tokens-out 1M --api gpt-4o\n"
           "  plumb tco --device rtx-4090 --from-usage --since 30d\n"
           "  plumb tco --capex 9000 --power 700W --kwh-price 0.25 --api-in 0.9 --api-out 0.9 --png tco.png\n");
}

struct unit {
    const char *suffix;
    double scale;
};

static const struct unit no_units[] = {{"", 1}, {NULL, 0}};
static const struct unit power_units[] = {{"", 1}, {"W", 1}, {"w", 1}, {"kW", 1e3}, {"kw", 1e3}, {NULL, 0}};
static const struct unit token_units[] = {{"", 1},   {"k", 1e3}, {"K", 1e3}, {"M", 1e6},
                                          {"m", 1e6}, {"G", 1e9}, {"B", 1e9}, {NULL, 0}};
static const struct unit share_units[] = {{"", 1}, {"%", 0.01}, {NULL, 0}};

/* A non-negative number with an optional unit suffix from `units`. */
static bool parse_quantity(const char *opt, const char *s, const struct unit *units, const char *unit_help, double hi,
                           double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || errno || !isfinite(v)) {
        cli_usage_error("tco", "%s expects a number%s%s, got '%s'", opt, unit_help ? " in " : "",
                        unit_help ? unit_help : "", s);
        return false;
    }
    const struct unit *u = units;
    for (; u->suffix; u++)
        if (!strcmp(end, u->suffix))
            break;
    if (!u->suffix) {
        cli_usage_error("tco", "%s: unknown unit '%s' in '%s'%s%s", opt, end, s, unit_help ? " (use " : " (a plain number)",
                        unit_help ? unit_help : "");
        return false;
    }
    v *= u->scale;
    if (v < 0) {
        cli_usage_error("tco", "%s must not be negative, got '%s'", opt, s);
        return false;
    }
    if (v > hi) {
        cli_usage_error("tco", "%s is out of range (at most %g), got '%s'", opt, hi, s);
        return false;
    }
    *out = v;
    return true;
}

struct opts {
    struct tco_inputs in;
    const char *device, *api, *model, *quant, *svg, *png, *currency, *catalog_dir;
    bool capex_set, power_set, idle_set, api_in_set, api_out_set, no_chart, json, list;
    bool tokens_set, from_usage;
    double months, since;
};

/* The measured volume: what plumb serve recorded. */
struct measured {
    uint64_t requests, prompt_tokens, completion_tokens;
    double start, days; /* the window the rates are over */
};

/* Tokens a day from the usage the store recorded since o->since (0: all),
 * over the time from then (or the first request) to now, at least a day:
 * a few minutes of traffic is not extrapolated to a day's. */
static int volume_from_usage(struct opts *o, struct measured *m)
{
    struct store *st;
    pb_err err = {0};
    if (store_open_readonly(NULL, &st, &err))
        return cli_error("tco", "--from-usage: %s", err.msg);
    struct store_usage_sum *rows;
    size_t n;
    int rc = store_usage_query(st, o->since, STORE_USAGE_TOTAL, &rows, &n, &err);
    char home[1024];
    snprintf(home, sizeof home, "%s", store_home(st));
    store_close(st);
    if (rc)
        return cli_error("tco", "--from-usage: %s", err.msg);
    memset(m, 0, sizeof *m);
    if (n) {
        m->requests = rows[0].requests;
        m->prompt_tokens = rows[0].prompt_tokens;
        m->completion_tokens = rows[0].completion_tokens;
        m->start = o->since > 0 ? o->since : rows[0].first;
    }
    free(rows);
    if (!m->requests)
        return cli_error("tco", "--from-usage: no requests recorded%s in the store at %s (plumb serve records "
                         "them); give --tokens-in and --tokens-out instead", o->since > 0 ? " in that time" : "", home);
    m->days = fmax(((double)time(NULL) - m->start) / 86400.0, 1.0);
    o->in.tokens_in_day = (double)m->prompt_tokens / m->days;
    o->in.tokens_out_day = (double)m->completion_tokens / m->days;
    return CLI_OK;
}

static void list_apis(const struct catalog *c)
{
    printf("| id                     | provider     | model                          | input $/Mtok | output $/Mtok | date    |\n");
    printf("| ---------------------- | ------------ | ------------------------------ | ------------ | ------------- | ------- |\n");
    for (int i = 0; i < c->n_prices; i++) {
        const struct cat_price *p = &c->prices[i];
        printf("| %-22s | %-12s | %-30s | %12.3f | %13.3f | %-7s |\n", p->id, p->provider, p->model, p->input_per_mtok,
               p->output_per_mtok, p->date);
    }
    printf("\n%d price points (%s); list prices at their date: check the sources for current ones\n", c->n_prices,
           c->origin[CAT_PRICES]);
}

/* Capacity of the device for the model: aggregate generation tokens/s at
 * one user (catalog figures, assumed efficiency). */
/* The device's capacity for the model, when one is given. */
static int capacity(const struct opts *o, const struct catalog *cat, const struct cat_device *d,
                    struct plan_capacity *cap)
{
    memset(cap, 0, sizeof *cap);
    if (!o->model)
        return CLI_OK;
    pb_err err = {0};
    int rc = plan_capacity(cat, o->model, d, o->quant, o->in.tokens_out_day, cap, &err);
    if (rc == PB_ENOTFOUND || rc == PB_EINVAL)
        return cli_usage_error("tco", "%s", err.msg);
    if (rc)
        return cli_error("tco", "%s", err.msg);
    return CLI_OK;
}

static void fmt_tokens(double v, char *b, size_t n)
{
    if (v >= 1e9)
        snprintf(b, n, "%.2f G", v / 1e9);
    else if (v >= 1e6)
        snprintf(b, n, "%.2f M", v / 1e6);
    else if (v >= 1e3)
        snprintf(b, n, "%.1f k", v / 1e3);
    else
        snprintf(b, n, "%.0f", v);
}

static void fmt_months(double m, char *b, size_t n)
{
    if (m < 0)
        snprintf(b, n, "never");
    else
        snprintf(b, n, "%.1f", m);
}

/* A break-even that never comes is null in JSON, not a negative number. */
static json_t *json_or_never(double v)
{
    return v >= 0 && isfinite(v) ? json_real(v) : json_null();
}

int cmd_tco(int argc, char **argv)
{
    enum { OPT_DEVICE = 1000, OPT_CAPEX, OPT_EXTRA, OPT_POWER, OPT_IDLE, OPT_KWH, OPT_UTIL, OPT_YEARS, OPT_UP_H,
           OPT_UP_R, OPT_TIN, OPT_TOUT, OPT_API, OPT_API_IN, OPT_API_OUT, OPT_MODEL, OPT_QUANT, OPT_SVG, OPT_PNG,
           OPT_NO_CHART, OPT_MONTHS, OPT_CURRENCY, OPT_CATALOG, OPT_LIST, OPT_JSON, OPT_FROM_USAGE, OPT_SINCE };
    static const struct option longopts[] = {
        {"device", required_argument, 0, OPT_DEVICE},   {"capex", required_argument, 0, OPT_CAPEX},
        {"extra-capex", required_argument, 0, OPT_EXTRA}, {"power", required_argument, 0, OPT_POWER},
        {"idle-power", required_argument, 0, OPT_IDLE}, {"kwh-price", required_argument, 0, OPT_KWH},
        {"utilisation", required_argument, 0, OPT_UTIL}, {"utilization", required_argument, 0, OPT_UTIL},
        {"years", required_argument, 0, OPT_YEARS},     {"upkeep-hours", required_argument, 0, OPT_UP_H},
        {"upkeep-rate", required_argument, 0, OPT_UP_R}, {"tokens-in", required_argument, 0, OPT_TIN},
        {"tokens-out", required_argument, 0, OPT_TOUT}, {"api", required_argument, 0, OPT_API},
        {"api-in", required_argument, 0, OPT_API_IN},   {"api-out", required_argument, 0, OPT_API_OUT},
        {"model", required_argument, 0, OPT_MODEL},     {"quant", required_argument, 0, OPT_QUANT},
        {"svg", required_argument, 0, OPT_SVG},         {"png", required_argument, 0, OPT_PNG},
        {"no-chart", no_argument, 0, OPT_NO_CHART},     {"months", required_argument, 0, OPT_MONTHS},
        {"currency", required_argument, 0, OPT_CURRENCY}, {"catalog", required_argument, 0, OPT_CATALOG},
        {"list-apis", no_argument, 0, OPT_LIST},        {"json", no_argument, 0, OPT_JSON},
        {"from-usage", no_argument, 0, OPT_FROM_USAGE}, {"since", required_argument, 0, OPT_SINCE},
        {"help", no_argument, 0, 'h'},                  {0, 0, 0, 0},
    };
    struct opts o = {
        .in = {.kwh_price = 0.30, .utilisation = 0.5, .years = 3, .upkeep_hours = 4, .upkeep_rate = 60,
               .tokens_in_day = 2e6, .tokens_out_day = 5e5},
        .api = "gpt-4o-mini",
        .svg = "plumb-tco.svg",
        .currency = "USD",
    };
    double v;
    int c;
    struct cli_parser par = {.cmd = "tco", .shortopts = "h", .longopts = longopts, .files = "svg,png,catalog"};
    while ((c = cli_getopt(argc, argv, &par)) != -1) {
        switch (c) {
        case OPT_DEVICE: o.device = optarg; break;
        case OPT_CAPEX:
            if (!parse_quantity("--capex", optarg, no_units, NULL, 1e12, &o.in.capex))
                return CLI_USAGE;
            o.capex_set = true;
            break;
        case OPT_EXTRA:
            if (!parse_quantity("--extra-capex", optarg, no_units, NULL, 1e12, &o.in.extra_capex))
                return CLI_USAGE;
            break;
        case OPT_POWER:
            if (!parse_quantity("--power", optarg, power_units, "W or kW", 1e9, &o.in.power_w))
                return CLI_USAGE;
            o.power_set = true;
            break;
        case OPT_IDLE:
            if (!parse_quantity("--idle-power", optarg, power_units, "W or kW", 1e9, &o.in.idle_w))
                return CLI_USAGE;
            o.idle_set = true;
            break;
        case OPT_KWH:
            if (!parse_quantity("--kwh-price", optarg, no_units, NULL, 1e3, &o.in.kwh_price))
                return CLI_USAGE;
            break;
        case OPT_UTIL:
            if (!parse_quantity("--utilisation", optarg, share_units, "0..1 or %", 1, &o.in.utilisation))
                return CLI_USAGE;
            break;
        case OPT_YEARS:
            if (!parse_quantity("--years", optarg, no_units, NULL, 100, &o.in.years))
                return CLI_USAGE;
            if (o.in.years <= 0)
                return cli_usage_error("tco", "--years must be above 0, got '%s'", optarg);
            break;
        case OPT_UP_H:
            if (!parse_quantity("--upkeep-hours", optarg, no_units, NULL, TCO_HOURS_PER_MONTH, &o.in.upkeep_hours))
                return CLI_USAGE;
            break;
        case OPT_UP_R:
            if (!parse_quantity("--upkeep-rate", optarg, no_units, NULL, 1e6, &o.in.upkeep_rate))
                return CLI_USAGE;
            break;
        case OPT_TIN:
            if (!parse_quantity("--tokens-in", optarg, token_units, "tokens with k, M or G", 1e15, &o.in.tokens_in_day))
                return CLI_USAGE;
            o.tokens_set = true;
            break;
        case OPT_TOUT:
            if (!parse_quantity("--tokens-out", optarg, token_units, "tokens with k, M or G", 1e15,
                                &o.in.tokens_out_day))
                return CLI_USAGE;
            o.tokens_set = true;
            break;
        case OPT_FROM_USAGE: o.from_usage = true; break;
        case OPT_SINCE:
            if (!cli_parse_since(optarg, &o.since))
                return cli_usage_error("tco", "--since wants YYYY-MM-DD or a span like 30d, 24h (not '%s')", optarg);
            break;
        case OPT_API: o.api = optarg; break;
        case OPT_API_IN:
            if (!parse_quantity("--api-in", optarg, no_units, NULL, 1e6, &o.in.api_in))
                return CLI_USAGE;
            o.api_in_set = true;
            break;
        case OPT_API_OUT:
            if (!parse_quantity("--api-out", optarg, no_units, NULL, 1e6, &o.in.api_out))
                return CLI_USAGE;
            o.api_out_set = true;
            break;
        case OPT_MODEL: o.model = optarg; break;
        case OPT_QUANT: o.quant = optarg; break;
        case OPT_SVG: o.svg = optarg; break;
        case OPT_PNG: o.png = optarg; break;
        case OPT_NO_CHART: o.no_chart = true; break;
        case OPT_MONTHS:
            if (!parse_quantity("--months", optarg, no_units, NULL, 1200, &v))
                return CLI_USAGE;
            if (v < 1)
                return cli_usage_error("tco", "--months must be at least 1, got '%s'", optarg);
            o.months = v;
            break;
        case OPT_CURRENCY: o.currency = optarg; break;
        case OPT_CATALOG: o.catalog_dir = optarg; break;
        case OPT_LIST: o.list = true; break;
        case OPT_JSON: o.json = true; break;
        case 'h': help(); return CLI_OK;
        default: return CLI_USAGE; /* cli_getopt said why */
        }
    }
    if (optind < argc)
        return cli_usage_error("tco", "unexpected argument '%s'", argv[optind]);
    if (o.from_usage && o.tokens_set)
        return cli_usage_error("tco", "--from-usage takes the volume from the store: drop --tokens-in/--tokens-out");
    if (o.since > 0 && !o.from_usage)
        return cli_usage_error("tco", "--since goes with --from-usage");
    if (o.since > (double)time(NULL))
        return cli_usage_error("tco", "--since is in the future");
    if (o.png && !strstr(o.png, ".png"))
        return cli_usage_error("tco", "--png wants a file name ending in .png, got '%s'", o.png);
    if (!o.no_chart && !strstr(o.svg, ".svg"))
        return cli_usage_error("tco", "--svg wants a file name ending in .svg, got '%s'", o.svg);

    struct catalog *cat;
    pb_err err = {0};
    if (catalog_load(o.catalog_dir, &cat, &err))
        return cli_error("tco", "%s", err.msg);
    int rc = CLI_OK;
    if (o.list) {
        list_apis(cat);
        goto done;
    }

    /* hardware */
    const struct cat_device *d = NULL;
    char hw[200] = "explicit figures";
    if (o.device && !strcmp(o.device, "this")) {
        /* this machine, as plan names it: the catalog has no price or
         * power for it, so they are the user's */
        if (!o.capex_set || !o.power_set) {
            rc = cli_usage_error("tco", "--device this: give what this machine cost and draws, --capex X and "
                                        "--power P (the catalog knows only its own devices)");
            goto done;
        }
        snprintf(hw, sizeof hw, "this machine (explicit figures)");
    } else if (o.device) {
        if (!(d = catalog_device(cat, o.device))) {
            char near[300];
            catalog_near(cat, CAT_DEVICES, o.device, near, sizeof near);
            rc = cli_usage_error("tco", "unknown device '%s'%s%s%s ('plumb plan --list-devices' lists them)", o.device,
                                 near[0] ? "; did you mean " : "", near, near[0] ? "?" : "");
            goto done;
        }
        snprintf(hw, sizeof hw, "%s (%s)", d->id, d->name);
        if (!o.capex_set)
            o.in.capex = d->price_usd;
        if (!o.power_set)
            o.in.power_w = d->power_w;
    } else if (!o.capex_set || !o.power_set) {
        rc = cli_usage_error("tco", "give --device ID, or both --capex and --power");
        goto done;
    }
    if (!o.idle_set)
        o.in.idle_w = o.in.power_w / 4;

    /* the API */
    const struct cat_price *api = NULL;
    char api_desc[200];
    if (o.api_in_set != o.api_out_set) {
        rc = cli_usage_error("tco", "give both --api-in and --api-out (or neither, for a catalog price)");
        goto done;
    }
    if (!o.api_in_set) {
        if (!(api = catalog_price(cat, o.api))) {
            char near[300];
            catalog_near(cat, CAT_PRICES, o.api, near, sizeof near);
            rc = cli_usage_error("tco", "unknown API price '%s'%s%s%s ('plumb tco --list-apis' lists them)", o.api,
                                 near[0] ? "; did you mean " : "", near, near[0] ? "?" : "");
            goto done;
        }
        o.in.api_in = api->input_per_mtok;
        o.in.api_out = api->output_per_mtok;
        snprintf(api_desc, sizeof api_desc, "%s (%s %s, list price %s)", api->id, api->provider, api->model, api->date);
    } else {
        snprintf(api_desc, sizeof api_desc, "explicit prices");
    }

    struct measured meas = {0};
    if (o.from_usage && (rc = volume_from_usage(&o, &meas)))
        goto done;

    struct plan_capacity cap;
    if ((rc = capacity(&o, cat, d, &cap)))
        goto done;

    struct tco_result r;
    if (tco_compute(&o.in, &r, &err)) {
        rc = cli_usage_error("tco", "%s", err.msg);
        goto done;
    }
    struct tco_variant var[TCO_MAX_VARIANTS];
    int n_var = tco_variants(&o.in, var);
    struct tco_result vr[16];
    for (int i = 0; i < n_var; i++)
        if (tco_compute(&var[i].in, &vr[i], &err)) {
            rc = cli_error("tco", "%s: %s", var[i].what, err.msg);
            goto done;
        }

    /* the chart spans the amortisation, or 1.5 x the break-even when later */
    double months = o.months;
    if (months <= 0) {
        months = o.in.years * 12;
        if (r.breakeven_months > months)
            months = fmin(ceil(r.breakeven_months * 1.5), 240);
    }
    char title[256], onprem_label[240], api_label[240];
    snprintf(title, sizeof title, "Cumulative cost: on premise vs API (%.0f M tokens/day)",
             (o.in.tokens_in_day + o.in.tokens_out_day) / 1e6);
    snprintf(onprem_label, sizeof onprem_label, "on premise: %s", d ? d->name : "explicit hardware");
    snprintf(api_label, sizeof api_label, "API: %s", api ? api->model : "explicit prices");
    struct tco_chart chart = {title, onprem_label, api_label, o.currency, months};
    const char *written[2] = {NULL, NULL};
    if (!o.no_chart) {
        if (tco_chart_write(o.svg, &o.in, &r, &chart, &err)) {
            rc = cli_error("tco", "%s", err.msg);
            goto done;
        }
        written[0] = o.svg;
    }
    if (o.png) {
        if (tco_chart_write(o.png, &o.in, &r, &chart, &err)) {
            rc = cli_error("tco", "%s", err.msg);
            goto done;
        }
        written[1] = o.png;
    }

    if (o.json) {
        json_t *sens = json_array();
        for (int i = 0; i < n_var; i++)
            json_array_append_new(sens, json_pack("{s:s,s:f,s:f,s:o}", "change", var[i].what, "onprem_per_mtok",
                                                  vr[i].onprem_per_mtok, "onprem_month", vr[i].onprem_month,
                                                  "breakeven_months", json_or_never(vr[i].breakeven_months)));
        json_t *j = json_pack(
            "{s:{s:s,s:f,s:f,s:f,s:f,s:f,s:f,s:f,s:f,s:f,s:f,s:f,s:s,s:f,s:f,s:s},"
            "s:{s:f,s:f,s:f,s:f,s:f,s:f,s:f,s:f,s:f,s:f,s:o,s:o,s:f},s:o,s:o}",
            "inputs", "hardware", hw, "capex", o.in.capex, "extra_capex", o.in.extra_capex, "power_w", o.in.power_w,
            "idle_power_w", o.in.idle_w, "kwh_price", o.in.kwh_price, "utilisation", o.in.utilisation, "years",
            o.in.years, "upkeep_hours_month", o.in.upkeep_hours, "upkeep_rate", o.in.upkeep_rate, "tokens_in_day",
            o.in.tokens_in_day, "tokens_out_day", o.in.tokens_out_day, "api", api_desc, "api_in_per_mtok", o.in.api_in,
            "api_out_per_mtok", o.in.api_out, "currency", o.currency, "result", "avg_power_w", r.avg_power_w,
            "energy_kwh_month", r.energy_kwh_month, "capex_month", r.capex_month, "energy_month", r.energy_month,
            "upkeep_month", r.upkeep_month, "onprem_month", r.onprem_month, "tokens_month", r.tokens_month,
            "api_month", r.api_month, "onprem_per_mtok", r.onprem_per_mtok, "api_per_mtok", r.api_per_mtok,
            "breakeven_tokens_month", json_or_never(r.breakeven_tokens_month),
            "breakeven_months", json_or_never(r.breakeven_months), "saving_month", r.saving_month, "sensitivity", sens, "charts",
            json_pack("{s:s?,s:s?}", "svg", written[0], "png", written[1]));
        json_object_set_new(json_object_get(j, "inputs"), "volume_source", json_string(o.from_usage ? "usage" : "given"));
        if (o.from_usage)
            json_object_set_new(json_object_get(j, "inputs"), "usage",
                                json_pack("{s:I,s:I,s:I,s:o,s:f}", "requests", (json_int_t)meas.requests,
                                          "prompt_tokens", (json_int_t)meas.prompt_tokens, "completion_tokens",
                                          (json_int_t)meas.completion_tokens, "since",
                                          cli_json_time((int64_t)meas.start), "days", meas.days));
        if (cap.known)
            json_object_set_new(j, "capacity", json_pack("{s:s,s:s,s:f,s:f}", "model", o.model, "quant", cap.quant,
                                                         "gen_tps", cap.tps, "needed_utilisation", cap.needed_share));
        rc = cli_print_json(j, true);
        goto done;
    }

    const char *cur = o.currency;
    char tin[32], tout[32], be[32];
    fmt_tokens(o.in.tokens_in_day, tin, sizeof tin);
    fmt_tokens(o.in.tokens_out_day, tout, sizeof tout);
    printf("hardware     %s\n", hw);
    printf("inputs       purchase %.2f %s%s + extra %.2f, amortised over %g years\n", o.in.capex, cur,
           d && !o.capex_set ? " (catalog, indicative)" : "", o.in.extra_capex, o.in.years);
    printf("             power %.0f W under load, %.0f W idle%s, utilisation %.0f%%, electricity %.3f %s/kWh\n",
           o.in.power_w, o.in.idle_w, o.idle_set ? "" : " (assumed: a quarter)", o.in.utilisation * 100,
           o.in.kwh_price, cur);
    printf("             upkeep %g h/month at %.2f %s/h\n", o.in.upkeep_hours, o.in.upkeep_rate, cur);
    printf("             volume %s input + %s output tokens a day\n", tin, tout);
    if (o.from_usage) {
        char since[32], pin[32], pout[32];
        cli_fmt_time((int64_t)meas.start, since, sizeof since);
        fmt_tokens((double)meas.prompt_tokens, pin, sizeof pin);
        fmt_tokens((double)meas.completion_tokens, pout, sizeof pout);
        printf("             (measured: %llu requests since %s, %s in + %s out tokens over %.2f days%s)\n",
               (unsigned long long)meas.requests, since, pin, pout, meas.days,
               meas.days <= 1.0 ? ", at least a day counted" : "");
    }
    printf("             API %s: %.3f in, %.3f out %s per million tokens\n", api_desc, o.in.api_in, o.in.api_out, cur);
    printf("\nmonthly      on premise %.2f %s = hardware %.2f + energy %.2f (%.0f kWh) + upkeep %.2f\n", r.onprem_month,
           cur, r.capex_month, r.energy_month, r.energy_kwh_month, r.upkeep_month);
    printf("             API %.2f %s for %s tokens\n", r.api_month, cur, (fmt_tokens(r.tokens_month, be, sizeof be), be));
    printf("per Mtok     on premise %.3f %s, API %.3f %s (input and output together)\n", r.onprem_per_mtok, cur,
           r.api_per_mtok, cur);
    if (isfinite(r.breakeven_tokens_month)) {
        fmt_tokens(r.breakeven_tokens_month / TCO_DAYS_PER_MONTH, be, sizeof be);
        printf("break-even   volume %s tokens a day at this mix (%.1fx today's)\n", be,
               r.breakeven_tokens_month / r.tokens_month);
    } else {
        printf("break-even   volume: never (the API costs nothing at these prices)\n");
    }
    if (r.breakeven_months >= 0)
        printf("             time %.1f months (the purchase back from saving %.2f %s a month on running costs)\n",
               r.breakeven_months, r.api_month - r.opex_month, cur);
    else
        printf("             time: never (running costs %.2f %s a month are above the API's %.2f)\n", r.opex_month, cur,
               r.api_month);
    printf("verdict      %s by %.2f %s a month over the amortisation\n",
           r.saving_month >= 0 ? "on premise is cheaper" : "the API is cheaper", fabs(r.saving_month), cur);
    if (cap.known) {
        printf("capacity     %s in %s on %s: about %.0f t/s generated in all (catalog figures, assumed efficiency); the "
               "output volume needs %.0f%% of the day%s\n",
               o.model, cap.quant, d->id, cap.tps, cap.needed_share * 100,
               cap.needed_share > 1 ? ": MORE than one device can do" : "");
    }
    char h1[40], h2[40];
    snprintf(h1, sizeof h1, "on premise %s/Mtok", cur);
    snprintf(h2, sizeof h2, "on premise %s/month", cur);
    printf("\nsensitivity  | change                  | %20.20s | %22.22s | break-even months |\n", h1, h2);
    printf("             | ----------------------- | -------------------- | ---------------------- | ----------------- |\n");
    char bm[32];
    fmt_months(r.breakeven_months, bm, sizeof bm);
    printf("             | %-23s | %20.3f | %22.2f | %17s |\n", "as given", r.onprem_per_mtok, r.onprem_month, bm);
    for (int i = 0; i < n_var; i++) {
        fmt_months(vr[i].breakeven_months, bm, sizeof bm);
        printf("             | %-23s | %20.3f | %22.2f | %17s |\n", var[i].what, vr[i].onprem_per_mtok,
               vr[i].onprem_month, bm);
    }
    if (written[0] || written[1])
        printf("\nchart        %s%s%s (%.0f months)\n", written[0] ? written[0] : "", written[0] && written[1] ? ", " : "",
               written[1] ? written[1] : "", months);
done:
    catalog_free(cat);
    return rc;
}
