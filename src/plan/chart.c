/* The TCO chart, drawn once with cairo onto an SVG or a PNG surface. */
#define _GNU_SOURCE
#include "plumb/plan.h"

#include "base/err.h"

#include <cairo-svg.h>
#include <cairo.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#define W 800.0
#define H 480.0
#define ML 90.0  /* margins: left (axis labels), right, top (title), bottom */
#define MR 30.0
#define MT 60.0
#define MB 60.0

/* A round step for about n ticks over [0, max]. */
static double nice_step(double max, int n)
{
    double raw = max / n, mag = pow(10, floor(log10(raw))), f = raw / mag;
    return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * mag;
}

static void fmt_money(double v, char *buf, size_t n)
{
    if (fabs(v) >= 1e6)
        snprintf(buf, n, "%.1fM", v / 1e6);
    else if (fabs(v) >= 1e4)
        snprintf(buf, n, "%.0fk", v / 1e3);
    else
        snprintf(buf, n, "%.0f", v);
}

static void text(cairo_t *cr, double x, double y, const char *s, double align)
{
    cairo_text_extents_t e;
    cairo_text_extents(cr, s, &e);
    cairo_move_to(cr, x - align * e.width - e.x_bearing, y);
    cairo_show_text(cr, s);
}

static void draw(cairo_t *cr, const struct tco_inputs *in, const struct tco_result *r, const struct tco_chart *c)
{
    const double months = c->months > 0 ? c->months : 36;
    const double capex = in->capex + in->extra_capex;
    const double end_onprem = capex + r->opex_month * months, end_api = r->api_month * months;
    const double ymax_raw = fmax(fmax(end_onprem, end_api), 1.0);
    const double ystep = nice_step(ymax_raw, 6), ymax = ceil(ymax_raw / ystep) * ystep;
    const double xstep = months <= 24 ? 3 : months <= 60 ? 6 : 12;
    const double pw = W - ML - MR, ph = H - MT - MB;
#define X(m) (ML + (m) / months * pw)
#define Y(v) (MT + ph - (v) / ymax * ph)

    cairo_set_source_rgb(cr, 1, 1, 1);
    cairo_paint(cr);
    cairo_select_font_face(cr, "sans-serif", CAIRO_FONT_SLANT_NORMAL, CAIRO_FONT_WEIGHT_NORMAL);

    /* grid and axes */
    cairo_set_line_width(cr, 1);
    cairo_set_font_size(cr, 12);
    for (double v = 0; v <= ymax + 1e-9; v += ystep) {
        cairo_set_source_rgb(cr, 0.88, 0.88, 0.88);
        cairo_move_to(cr, ML, Y(v));
        cairo_line_to(cr, ML + pw, Y(v));
        cairo_stroke(cr);
        char b[32];
        fmt_money(v, b, sizeof b);
        cairo_set_source_rgb(cr, 0.25, 0.25, 0.25);
        text(cr, ML - 8, Y(v) + 4, b, 1);
    }
    for (double m = 0; m <= months + 1e-9; m += xstep) {
        char b[16];
        snprintf(b, sizeof b, "%.0f", m);
        cairo_set_source_rgb(cr, 0.25, 0.25, 0.25);
        text(cr, X(m), MT + ph + 18, b, 0.5);
    }
    cairo_set_source_rgb(cr, 0, 0, 0);
    cairo_move_to(cr, ML, MT);
    cairo_line_to(cr, ML, MT + ph);
    cairo_line_to(cr, ML + pw, MT + ph);
    cairo_stroke(cr);
    text(cr, ML + pw / 2, H - 18, "months", 0.5);
    cairo_save(cr);
    cairo_translate(cr, 22, MT + ph / 2);
    cairo_rotate(cr, -M_PI / 2);
    char ylabel[64];
    snprintf(ylabel, sizeof ylabel, "cumulative cost (%s)", c->currency ? c->currency : "USD");
    text(cr, 0, 0, ylabel, 0.5);
    cairo_restore(cr);

    /* the two lines */
    cairo_set_line_width(cr, 3);
    cairo_set_source_rgb(cr, 0.10, 0.45, 0.80); /* on premise */
    cairo_move_to(cr, X(0), Y(capex));
    cairo_line_to(cr, X(months), Y(end_onprem));
    cairo_stroke(cr);
    cairo_set_source_rgb(cr, 0.85, 0.35, 0.10); /* API */
    cairo_move_to(cr, X(0), Y(0));
    cairo_line_to(cr, X(months), Y(end_api));
    cairo_stroke(cr);

    /* break-even */
    cairo_set_font_size(cr, 12);
    if (r->breakeven_months >= 0 && r->breakeven_months <= months) {
        double bx = X(r->breakeven_months), by = Y(r->api_month * r->breakeven_months);
        cairo_set_source_rgb(cr, 0.1, 0.1, 0.1);
        cairo_arc(cr, bx, by, 5, 0, 2 * M_PI);
        cairo_fill(cr);
        char b[64];
        snprintf(b, sizeof b, "break-even: %.1f months", r->breakeven_months);
        text(cr, bx + 8, by + 18, b, 0);
    }

    /* title and legend */
    cairo_set_source_rgb(cr, 0, 0, 0);
    cairo_set_font_size(cr, 16);
    text(cr, ML, 28, c->title ? c->title : "On premise vs API", 0);
    cairo_set_font_size(cr, 12);
    const char *labels[2] = {c->onprem_label ? c->onprem_label : "on premise", c->api_label ? c->api_label : "API"};
    const double colors[2][3] = {{0.10, 0.45, 0.80}, {0.85, 0.35, 0.10}};
    for (int i = 0; i < 2; i++) {
        double ly = MT + 16 + 18 * i;
        cairo_set_source_rgb(cr, colors[i][0], colors[i][1], colors[i][2]);
        cairo_rectangle(cr, ML + 12, ly - 9, 18, 4);
        cairo_fill(cr);
        cairo_set_source_rgb(cr, 0.1, 0.1, 0.1);
        text(cr, ML + 38, ly - 3, labels[i], 0);
    }
#undef X
#undef Y
}

static bool has_ext(const char *path, const char *ext)
{
    size_t n = strlen(path), k = strlen(ext);
    return n > k && !strcasecmp(path + n - k, ext);
}

int tco_chart_write(const char *path, const struct tco_inputs *in, const struct tco_result *r,
                    const struct tco_chart *c, pb_err *err)
{
    bool svg = has_ext(path, ".svg"), png = has_ext(path, ".png");
    if (!svg && !png)
        return pb_fail(err, PB_EINVAL, "%s: the chart is written as .svg or .png", path);
    cairo_surface_t *s = svg ? cairo_svg_surface_create(path, W, H)
                             : cairo_image_surface_create(CAIRO_FORMAT_ARGB32, (int)W, (int)H);
    if (cairo_surface_status(s) != CAIRO_STATUS_SUCCESS) {
        int rc = pb_fail(err, PB_EIO, "cannot write %s: %s", path, cairo_status_to_string(cairo_surface_status(s)));
        cairo_surface_destroy(s);
        return rc;
    }
    cairo_t *cr = cairo_create(s);
    draw(cr, in, r, c);
    cairo_status_t st = cairo_status(cr);
    cairo_destroy(cr);
    if (st == CAIRO_STATUS_SUCCESS && png)
        st = cairo_surface_write_to_png(s, path);
    cairo_surface_finish(s);
    if (st == CAIRO_STATUS_SUCCESS)
        st = cairo_surface_status(s);
    cairo_surface_destroy(s);
    if (st != CAIRO_STATUS_SUCCESS)
        return pb_fail(err, PB_EIO, "cannot write %s: %s", path, cairo_status_to_string(st));
    return PB_OK;
}
