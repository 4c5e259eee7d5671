/* Total cost of ownership: running a model on premise against paying a
 * cloud API per token.
 *
 * The arithmetic, all per month of 365.25 / 12 = 30.4375 days (730.5 h):
 *   average power  = idle + utilisation x (load - idle)             W
 *   energy         = average power x 730.5 / 1000 x price per kWh
 *   capex          = (purchase + extra) / (12 x years)
 *   upkeep         = hours x rate
 *   on premise     = capex + energy + upkeep; opex = energy + upkeep
 *   tokens         = (input + output per day) x 30.4375
 *   API            = (input x in price + output x out price) per day
 *                    x 30.4375 / 1e6
 *   per Mtok       = monthly cost / (tokens / 1e6), both sides
 *   break-even volume: tokens a month at which the API bill equals the
 *                    on-premise month (same input:output mix)
 *   break-even time: months until the cumulative costs meet, the machine
 *                    bought up front: purchase / (API - opex); never when
 *                    the API costs no more than the opex
 */
#ifndef PLUMB_PLAN_TCO_H
#define PLUMB_PLAN_TCO_H

#include "base/err.h"

#include <stdbool.h>

#define TCO_DAYS_PER_MONTH (365.25 / 12.0)
#define TCO_HOURS_PER_MONTH (TCO_DAYS_PER_MONTH * 24.0)

struct tco_inputs {
    double capex;            /* purchase price of the hardware */
    double extra_capex;      /* the rest of the machine, installation */
    double power_w;          /* draw under load */
    double idle_w;           /* draw when idle */
    double kwh_price;
    double utilisation;      /* share of the time under load, 0..1 */
    double years;            /* amortisation */
    double upkeep_hours;     /* per month */
    double upkeep_rate;      /* per hour */
    double tokens_in_day, tokens_out_day;
    double api_in, api_out;  /* price per million tokens */
};

struct tco_result {
    double avg_power_w, energy_kwh_month;
    double capex_month, energy_month, upkeep_month, opex_month, onprem_month;
    double tokens_month, api_month;
    double onprem_per_mtok, api_per_mtok;
    double breakeven_tokens_month;  /* inf when the API is free */
    double breakeven_months;        /* < 0: never */
    double saving_month;            /* API - on premise (negative: the API is cheaper) */
};

/* Checks the inputs (no negative money, power or volume; utilisation
 * 0..1; idle <= load; years > 0) and computes. */
int tco_compute(const struct tco_inputs *in, struct tco_result *r, pb_err *err);

/* The chart: cumulative cost over `months` months, on premise (starting at
 * the purchase) against the API, with the break-even point. Written as SVG
 * or PNG by the file name's extension. */
struct tco_chart {
    const char *title;
    const char *onprem_label, *api_label;
    const char *currency;
    double months;
};
int tco_chart_write(const char *path, const struct tco_inputs *in, const struct tco_result *r,
                    const struct tco_chart *c, pb_err *err);

#endif
