/* The TCO chart, drawn once: as SVG elements (text stays <text>) or with
 * cairo onto a PNG. */
#define _GNU_SOURCE
#include "plumb/plan.h"

#include "base/err.h"
#include "base/sbuf.h"

#include <cairo.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
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

/* Tick labels in one style for the whole axis: the unit (k, M) and the
 * decimals follow the axis's largest value and its step, so that 5000 and
 * 10000 are not "5000" and "10k" side by side. */
struct money_fmt {
    double div;
    const char *unit;
    int decimals;
};

static struct money_fmt money_fmt(double ymax, double step)
{
    struct money_fmt f = {1, "", 0};
    if (ymax >= 1e6)
        f = (struct money_fmt){1e6, "M", 0};
    else if (ymax >= 1e4)
        f = (struct money_fmt){1e3, "k", 0};
    while (f.decimals < 3 && fabs(step / f.div * pow(10, f.decimals) - round(step / f.div * pow(10, f.decimals))) > 1e-6)
        f.decimals++;
    return f;
}

static void fmt_money(const struct money_fmt *f, double v, char *buf, size_t n)
{
    snprintf(buf, n, "%.*f%s", f->decimals, v / f->div, v == 0 ? "" : f->unit);
}

/* What the chart is drawn on: cairo (PNG), or SVG elements written as
 * text, so that the chart's words stay <text> (searchable, editable)
 * rather than glyph outlines. */
struct canvas {
    cairo_t *cr;     /* PNG */
    struct sbuf *svg; /* SVG */
    double rgb[3];
    double font;
    bool failed;     /* out of memory building the SVG */
};

static void svgf(struct canvas *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void svgf(struct canvas *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (sbuf_vaddf(c->svg, fmt, ap))
        c->failed = true;
    va_end(ap);
}

static void colour(struct canvas *c, double r, double g, double b)
{
    c->rgb[0] = r, c->rgb[1] = g, c->rgb[2] = b;
    if (c->cr)
        cairo_set_source_rgb(c->cr, r, g, b);
}

static void font(struct canvas *c, double size)
{
    c->font = size;
    if (c->cr)
        cairo_set_font_size(c->cr, size);
}

#define RGB(c) (int)lround((c)->rgb[0] * 255), (int)lround((c)->rgb[1] * 255), (int)lround((c)->rgb[2] * 255)

/* A polyline of n points (x, y pairs). */
static void lines(struct canvas *c, const double *xy, int n, double width)
{
    if (c->cr) {
        cairo_set_line_width(c->cr, width);
        cairo_move_to(c->cr, xy[0], xy[1]);
        for (int i = 1; i < n; i++)
            cairo_line_to(c->cr, xy[2 * i], xy[2 * i + 1]);
        cairo_stroke(c->cr);
        return;
    }
    svgf(c, "<polyline fill=\"none\" stroke=\"rgb(%d,%d,%d)\" stroke-width=\"%g\" points=\"", RGB(c), width);
    for (int i = 0; i < n; i++)
        svgf(c, "%s%.1f,%.1f", i ? " " : "", xy[2 * i], xy[2 * i + 1]);
    svgf(c, "\"/>\n");
}

static void line(struct canvas *c, double x0, double y0, double x1, double y1, double width)
{
    const double xy[4] = {x0, y0, x1, y1};
    lines(c, xy, 2, width);
}

static void rect(struct canvas *c, double x, double y, double w, double h)
{
    if (c->cr) {
        cairo_rectangle(c->cr, x, y, w, h);
        cairo_fill(c->cr);
    } else {
        svgf(c, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"rgb(%d,%d,%d)\"/>\n", x, y, w, h,
             RGB(c));
    }
}

static void dot(struct canvas *c, double x, double y, double radius)
{
    if (c->cr) {
        cairo_arc(c->cr, x, y, radius, 0, 2 * M_PI);
        cairo_fill(c->cr);
    } else {
        svgf(c, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"%g\" fill=\"rgb(%d,%d,%d)\"/>\n", x, y, radius, RGB(c));
    }
}

/* Text with its baseline at y, aligned at x by align (0 start, 0.5 middle,
 * 1 end), turned a quarter counter-clockwise when vertical. */
static void text(struct canvas *c, double x, double y, const char *s, double align, bool vertical)
{
    if (c->cr) {
        cairo_save(c->cr);
        cairo_translate(c->cr, x, y);
        if (vertical)
            cairo_rotate(c->cr, -M_PI / 2);
        cairo_text_extents_t e;
        cairo_text_extents(c->cr, s, &e);
        cairo_move_to(c->cr, -align * e.width - e.x_bearing, 0);
        cairo_show_text(c->cr, s);
        cairo_restore(c->cr);
        return;
    }
    svgf(c, "<text x=\"%.1f\" y=\"%.1f\" font-family=\"sans-serif\" font-size=\"%g\" fill=\"rgb(%d,%d,%d)\" "
            "text-anchor=\"%s\"", x, y, c->font, RGB(c), align >= 1 ? "end" : align > 0 ? "middle" : "start");
    if (vertical)
        svgf(c, " transform=\"rotate(-90 %.1f %.1f)\"", x, y);
    svgf(c, ">");
    for (const char *p = s; *p; p++) {
        switch (*p) {
        case '&': svgf(c, "&amp;"); break;
        case '<': svgf(c, "&lt;"); break;
        case '>': svgf(c, "&gt;"); break;
        default:
            if ((unsigned char)*p >= 0x20)
                svgf(c, "%c", *p);
        }
    }
    svgf(c, "</text>\n");
}

static void draw(struct canvas *cv, const struct tco_inputs *in, const struct tco_result *r, const struct tco_chart *c)
{
    const double months = c->months > 0 ? c->months : 36;
    const double capex = in->capex + in->extra_capex;
    const double end_onprem = capex + r->opex_month * months, end_api = r->api_month * months;
    const double ymax_raw = fmax(fmax(end_onprem, end_api), 1.0);
    const double ystep = nice_step(ymax_raw, 6), ymax = ceil(ymax_raw / ystep) * ystep;
    const double xstep = months <= 24 ? 3 : months <= 60 ? 6 : 12;
    const double pw = W - ML - MR, ph = H - MT - MB;
    const struct money_fmt mf = money_fmt(ymax, ystep);
#define X(m) (ML + (m) / months * pw)
#define Y(v) (MT + ph - (v) / ymax * ph)

    colour(cv, 1, 1, 1);
    rect(cv, 0, 0, W, H);
    if (cv->cr)
        cairo_select_font_face(cv->cr, "sans-serif", CAIRO_FONT_SLANT_NORMAL, CAIRO_FONT_WEIGHT_NORMAL);

    /* grid and axes */
    font(cv, 12);
    for (double v = 0; v <= ymax + 1e-9; v += ystep) {
        colour(cv, 0.88, 0.88, 0.88);
        line(cv, ML, Y(v), ML + pw, Y(v), 1);
        char b[32];
        fmt_money(&mf, v, b, sizeof b);
        colour(cv, 0.25, 0.25, 0.25);
        text(cv, ML - 8, Y(v) + 4, b, 1, false);
    }
    for (double m = 0; m <= months + 1e-9; m += xstep) {
        char b[16];
        snprintf(b, sizeof b, "%.0f", m);
        colour(cv, 0.25, 0.25, 0.25);
        text(cv, X(m), MT + ph + 18, b, 0.5, false);
    }
    colour(cv, 0, 0, 0);
    const double axes[6] = {ML, MT, ML, MT + ph, ML + pw, MT + ph};
    lines(cv, axes, 3, 1);
    text(cv, ML + pw / 2, H - 18, "months", 0.5, false);
    char ylabel[64];
    snprintf(ylabel, sizeof ylabel, "cumulative cost (%s)", c->currency ? c->currency : "USD");
    text(cv, 22, MT + ph / 2, ylabel, 0.5, true);

    /* the two lines */
    colour(cv, 0.10, 0.45, 0.80); /* on premise */
    line(cv, X(0), Y(capex), X(months), Y(end_onprem), 3);
    colour(cv, 0.85, 0.35, 0.10); /* API */
    line(cv, X(0), Y(0), X(months), Y(end_api), 3);

    /* break-even */
    font(cv, 12);
    if (r->breakeven_months >= 0 && r->breakeven_months <= months) {
        double bx = X(r->breakeven_months), by = Y(r->api_month * r->breakeven_months);
        colour(cv, 0.1, 0.1, 0.1);
        dot(cv, bx, by, 5);
        char b[64];
        snprintf(b, sizeof b, "break-even: %.1f months", r->breakeven_months);
        text(cv, bx + 8, by + 18, b, 0, false);
    }

    /* title and legend */
    colour(cv, 0, 0, 0);
    font(cv, 16);
    text(cv, ML, 28, c->title ? c->title : "On premise vs API", 0, false);
    font(cv, 12);
    const char *labels[2] = {c->onprem_label ? c->onprem_label : "on premise", c->api_label ? c->api_label : "API"};
    const double colors[2][3] = {{0.10, 0.45, 0.80}, {0.85, 0.35, 0.10}};
    for (int i = 0; i < 2; i++) {
        double ly = MT + 16 + 18 * i;
        colour(cv, colors[i][0], colors[i][1], colors[i][2]);
        rect(cv, ML + 12, ly - 9, 18, 4);
        colour(cv, 0.1, 0.1, 0.1);
        text(cv, ML + 38, ly - 3, labels[i], 0, false);
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
    if (svg) {
        /* the SVG's elements written here, then the file whole or not at all */
        struct sbuf b = {0};
        struct canvas cv = {.svg = &b};
        svgf(&cv, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<svg xmlns=\"http://www.w3.org/2000/svg\" "
                  "width=\"%.0f\" height=\"%.0f\" viewBox=\"0 0 %.0f %.0f\">\n", W, H, W, H);
        draw(&cv, in, r, c);
        svgf(&cv, "</svg>\n");
        int rc = cv.failed ? pb_fail(err, PB_ENOMEM, "out of memory drawing %s", path)
                           : pb_write_small(path, b.data, b.len, 0644, err);
        sbuf_free(&b);
        return rc;
    }
    cairo_surface_t *s = cairo_image_surface_create(CAIRO_FORMAT_ARGB32, (int)W, (int)H);
    if (cairo_surface_status(s) != CAIRO_STATUS_SUCCESS) {
        int rc = pb_fail(err, PB_EIO, "cannot draw %s: %s", path, cairo_status_to_string(cairo_surface_status(s)));
        cairo_surface_destroy(s);
        return rc;
    }
    cairo_t *cr = cairo_create(s);
    struct canvas cv = {.cr = cr};
    draw(&cv, in, r, c);
    cairo_status_t st = cairo_status(cr);
    cairo_destroy(cr);
    if (st == CAIRO_STATUS_SUCCESS)
        st = cairo_surface_write_to_png(s, path);
    cairo_surface_destroy(s);
    if (st != CAIRO_STATUS_SUCCESS)
        return pb_fail(err, PB_EIO, "cannot write %s: %s", path, cairo_status_to_string(st));
    return PB_OK;
}
