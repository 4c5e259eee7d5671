#define _GNU_SOURCE
/* The plan's prediction against measurement, on this machine, in one run:
 *   1. plumb survey --quick (the profile, into a fresh PLUMB_HOME);
 *   2. plumb bench --shape tinyllama-1.1b:Q4_0 (a calibration record);
 *   3. plumb plan tinyllama-1.1b: the Q8_0 prediction rests on the Q4_0
 *      record only (another type: an out-of-sample figure);
 *   4. plumb bench --shape tinyllama-1.1b:Q8_0 measures it;
 *   5. plumb plan again: each type with its own record.
 * Checked: the survey's bandwidth lies within a factor of 2 of the range
 * the benches see, and, with SIMD kernels, the cross-type prediction of
 * step 3 is within a factor of 2 of step 4's measurement once both are
 * taken as shares of the bandwidth their own bench run measured (the
 * prediction carries the Q4_0 run's reading, the measurement the Q8_0
 * run's; on this shared VM readings move by 2x between runs, which the
 * roofline model is not about). The same-type predictions of step 5 are
 * printed, not checked: a calibrated type predicts with its own record's
 * bandwidth and efficiency, so they equal the measurement by
 * construction. argv[1] is the plumb binary.
 *
 * Skipped under the sanitizers, where timings mean nothing. */
#include "testutil.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

static const char *plumb_bin;

/* Runs plumb with args, stdout parsed as JSON. */
static json_t *run_json(const char *args)
{
    char cmd[2048], out[512];
    test_tmpfile("planval.json", out, sizeof out);
    snprintf(cmd, sizeof cmd, "'%s' %s >'%s'", plumb_bin, args, out);
    printf("$ plumb %s\n", args);
    fflush(stdout);
    int st = system(cmd);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        fail_msg("plumb %s: exit status %d", args, WIFEXITED(st) ? WEXITSTATUS(st) : -1);
    json_error_t e;
    json_t *j = json_load_file(out, 0, &e);
    if (!j)
        fail_msg("plumb %s: not JSON: %s", args, e.text);
    return j;
}

/* A bench's generation t/s; *bw gets the bandwidth its record carries
 * (the higher of its two readings), lo/hi the range of its readings. */
static double bench_tg(json_t *b, double *bw, double *bw_lo, double *bw_hi)
{
    double before = json_number_value(json_object_get(b, "bandwidth_before_gbs"));
    double after = json_number_value(json_object_get(b, "bandwidth_after_gbs"));
    *bw = fmax(before, after);
    *bw_lo = fmin(*bw_lo, fmin(before, after));
    *bw_hi = fmax(*bw_hi, fmax(before, after));
    json_t *res = json_object_get(b, "results");
    for (size_t i = 0; i < json_array_size(res); i++) {
        json_t *t = json_array_get(res, i);
        if (!strncmp(json_string_value(json_object_get(t, "test")), "tg", 2))
            return json_number_value(json_object_get(t, "t_s"));
    }
    fail_msg("no tg result");
    return 0;
}

/* Predicted generation t/s per user of quant on the first target. */
static double plan_tg(json_t *p, const char *quant)
{
    json_t *rows = json_object_get(json_array_get(json_object_get(p, "targets"), 0), "rows");
    for (size_t i = 0; i < json_array_size(rows); i++) {
        json_t *r = json_array_get(rows, i);
        if (!strcmp(json_string_value(json_object_get(r, "quant")), quant))
            return json_number_value(json_object_get(r, "gen_tps_per_user"));
    }
    fail_msg("no %s row in the plan", quant);
    return 0;
}

static void test_prediction(void **state)
{
    (void)state;
    char home[512];
    snprintf(home, sizeof home, "%s/home", test_tmpdir());
    setenv("PLUMB_HOME", home, 1);
    unsetenv("PLUMB_CATALOG");
    const char *plan = "plan tinyllama-1.1b --device this --ctx 48 --prompt 32 --json";
    char args[256];

    json_t *s = run_json("survey --quick --json");
    double survey_bw = json_number_value(json_object_get(json_object_get(s, "memory"), "bandwidth_gbs"));
    bool scalar = !strcmp(json_string_value(json_object_get(json_object_get(s, "cpu"), "kernels")), "scalar");
    json_decref(s);

    double lo = 1e30, hi = 0, bw4, bw8;
    snprintf(args, sizeof args, "bench %s", "--shape tinyllama-1.1b:Q4_0 -p 32 -n 16 -r 3 --json");
    json_t *b4 = run_json(args);
    double tg4 = bench_tg(b4, &bw4, &lo, &hi);
    json_decref(b4);

    json_t *p1 = run_json(plan);
    double cross8 = plan_tg(p1, "Q8_0");
    json_decref(p1);

    snprintf(args, sizeof args, "bench %s", "--shape tinyllama-1.1b:Q8_0 -p 32 -n 16 -r 3 --json");
    json_t *b8 = run_json(args);
    double tg8 = bench_tg(b8, &bw8, &lo, &hi);
    json_decref(b8);

    json_t *p2 = run_json(plan);
    double pred8 = plan_tg(p2, "Q8_0"), pred4 = plan_tg(p2, "Q4_0");
    json_decref(p2);

    const double shares = (cross8 / bw4) / (tg8 / bw8);
    printf("bandwidth: survey %.2f GB/s, benches %.2f..%.2f GB/s\n", survey_bw, lo, hi);
    printf("Q8_0 from the Q4_0 record alone: predicted %.2f t/s at %.1f GB/s, measured %.2f t/s at %.1f GB/s: "
           "shares of bandwidth predicted / measured %.3f\n", cross8, bw4, tg8, bw8, shares);
    printf("with their own records (equal by construction): Q8_0 %.2f predicted, %.2f measured; Q4_0 %.2f, %.2f\n",
           pred8, tg8, pred4, tg4);
    fflush(stdout);
    /* the benches measure before and after their tests; other load on the
     * shared host moves every reading (23 to 52 GB/s within one run of this
     * test on the 2-core VM), so "within the range" allows a factor of two
     * each way: it catches a wrong unit or a broken kernel, not noise */
    assert_true(survey_bw >= 0.5 * lo && survey_bw <= 2.0 * hi);
    /* the scalar kernels are compute bound, Q4_0's far more than Q8_0's:
     * one type's efficiency says little about the other's there */
    if (scalar)
        printf("scalar kernels: the cross-type figure is not checked\n");
    else
        assert_true(shares >= 0.5 && shares <= 2.0);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: test_planval PATH_TO_PLUMB\n");
        return 2;
    }
#ifdef PLANVAL_SANITIZED
    printf("SKIP: a sanitizer build: its timings say nothing about the machine\n");
    return TEST_SKIP_CODE;
#endif
    plumb_bin = argv[1];
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_prediction)};
    return cmocka_run_group_tests_name("planval", tests, NULL, NULL);
}
