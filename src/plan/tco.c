/* Total cost of ownership arithmetic (formulas in tco.h). */
#include "plumb/plan.h"

#include "base/err.h"

#include <math.h>
#include <string.h>

static int check(const char *name, double v, double lo, double hi, pb_err *err)
{
    if (!isfinite(v) || v < lo || v > hi)
        return pb_fail(err, PB_EINVAL, "%s must be in %g..%g, got %g", name, lo, hi, v);
    return PB_OK;
}

int tco_compute(const struct tco_inputs *in, struct tco_result *r, pb_err *err)
{
    memset(r, 0, sizeof *r);
    int rc;
    if ((rc = check("capex", in->capex, 0, 1e12, err)) || (rc = check("extra capex", in->extra_capex, 0, 1e12, err)) ||
        (rc = check("power", in->power_w, 0, 1e9, err)) || (rc = check("idle power", in->idle_w, 0, 1e9, err)) ||
        (rc = check("electricity price", in->kwh_price, 0, 1e3, err)) ||
        (rc = check("utilisation", in->utilisation, 0, 1, err)) || (rc = check("years", in->years, 1.0 / 12, 100, err)) ||
        (rc = check("upkeep hours", in->upkeep_hours, 0, TCO_HOURS_PER_MONTH, err)) ||
        (rc = check("upkeep rate", in->upkeep_rate, 0, 1e6, err)) ||
        (rc = check("input tokens per day", in->tokens_in_day, 0, 1e15, err)) ||
        (rc = check("output tokens per day", in->tokens_out_day, 0, 1e15, err)) ||
        (rc = check("API input price", in->api_in, 0, 1e6, err)) ||
        (rc = check("API output price", in->api_out, 0, 1e6, err)))
        return rc;
    if (in->idle_w > in->power_w)
        return pb_fail(err, PB_EINVAL, "idle power (%g W) is above the power under load (%g W)", in->idle_w,
                       in->power_w);
    if (in->tokens_in_day + in->tokens_out_day <= 0)
        return pb_fail(err, PB_EINVAL, "no tokens per day: give an input or output volume above 0");

    r->avg_power_w = in->idle_w + in->utilisation * (in->power_w - in->idle_w);
    r->energy_kwh_month = r->avg_power_w * TCO_HOURS_PER_MONTH / 1000.0;
    r->energy_month = r->energy_kwh_month * in->kwh_price;
    r->capex_month = (in->capex + in->extra_capex) / (12.0 * in->years);
    r->upkeep_month = in->upkeep_hours * in->upkeep_rate;
    r->opex_month = r->energy_month + r->upkeep_month;
    r->onprem_month = r->capex_month + r->opex_month;
    r->tokens_month = (in->tokens_in_day + in->tokens_out_day) * TCO_DAYS_PER_MONTH;
    r->api_month = (in->tokens_in_day * in->api_in + in->tokens_out_day * in->api_out) * TCO_DAYS_PER_MONTH / 1e6;
    r->onprem_per_mtok = r->onprem_month / (r->tokens_month / 1e6);
    r->api_per_mtok = r->api_month / (r->tokens_month / 1e6);
    r->breakeven_tokens_month = r->api_month > 0 ? r->onprem_month / (r->api_month / r->tokens_month) : INFINITY;
    r->breakeven_months = r->api_month > r->opex_month ? (in->capex + in->extra_capex) / (r->api_month - r->opex_month)
                                                       : -1;
    r->saving_month = r->api_month - r->onprem_month;
    return PB_OK;
}

int tco_variants(const struct tco_inputs *in, struct tco_variant *v)
{
    int n = 0;
    const double f[2] = {0.5, 2.0};
    for (int i = 0; i < 2; i++) {
        v[n] = (struct tco_variant){i ? "volume x2" : "volume x0.5", *in};
        v[n].in.tokens_in_day *= f[i];
        v[n++].in.tokens_out_day *= f[i];
        v[n] = (struct tco_variant){i ? "electricity x2" : "electricity x0.5", *in};
        v[n++].in.kwh_price *= f[i];
        v[n] = (struct tco_variant){i ? "hardware x1.5" : "hardware x0.75", *in};
        v[n].in.capex *= i ? 1.5 : 0.75;
        v[n++].in.extra_capex *= i ? 1.5 : 0.75;
        v[n] = (struct tco_variant){i ? "upkeep x2" : "upkeep x0.5", *in};
        v[n++].in.upkeep_hours *= f[i];
    }
    v[n] = (struct tco_variant){"utilisation 100%", *in};
    v[n++].in.utilisation = 1;
    v[n] = (struct tco_variant){"amortised over 5 years", *in};
    v[n++].in.years = 5;
    return n;
}
