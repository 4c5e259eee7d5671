#define _GNU_SOURCE
/* The machine survey against what the kernel says (sched_getaffinity,
 * sysconf, /proc/meminfo), its measurements, the profile's JSON form and
 * files, calibration records, and NVML through a stand-in library.
 * argv[1]: the fake NVML library. */
#include "testutil.h"

#include "plumb/survey.h"

#include <math.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *fake_nvml;

/* kB of a /proc/meminfo line, read here independently of the survey. */
static unsigned long long meminfo_kb(const char *key)
{
    FILE *f = fopen("/proc/meminfo", "r");
    assert_non_null(f);
    char line[256];
    unsigned long long v = 0;
    size_t k = strlen(key);
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, key, k) && line[k] == ':')
            v = strtoull(line + k + 1, NULL, 10);
    fclose(f);
    return v;
}

static void test_facts_match_kernel(void **state)
{
    (void)state;
    static struct survey s;
    struct survey_params p = {.no_measure = true, .models_dir = test_tmpdir()};
    pb_err err = {0};
    assert_int_equal(survey_run(&p, &s, &err), PB_OK);
    cpu_set_t set;
    assert_int_equal(sched_getaffinity(0, sizeof set, &set), 0);
    assert_int_equal(s.cpu.threads, CPU_COUNT(&set));
    assert_int_equal(s.cpu.threads_online, (int)sysconf(_SC_NPROCESSORS_ONLN));
    assert_true(s.cpu.cores >= 1 && s.cpu.cores <= s.cpu.threads_online);
    assert_true(s.cpu.sockets >= 1 && s.cpu.sockets <= s.cpu.cores);
    assert_true(s.cpu.numa_nodes >= 1);
    assert_true(strlen(s.cpu.model) > 0);
    assert_true(strlen(s.cpu.kernels) > 0);
    /* MemTotal does not move; MemAvailable does, a little */
    assert_int_equal(s.memory.total, meminfo_kb("MemTotal") * 1024);
    double avail = (double)meminfo_kb("MemAvailable") * 1024;
    assert_true(fabs((double)s.memory.available - avail) < 0.1 * (double)s.memory.total);
    assert_true(s.memory.available <= s.memory.total);
    for (int i = 0; i < s.cpu.n_caches; i++)
        assert_true(s.cpu.caches[i].level >= 1 && s.cpu.caches[i].bytes > 0 && s.cpu.caches[i].instances >= 1);
    /* the models folder is the temp dir here: its file system's figures */
    assert_string_equal(s.disk.path, test_tmpdir());
    assert_true(s.disk.total > 0 && s.disk.free <= s.disk.total);
    assert_true(s.memory.bandwidth_gbs == 0); /* not measured */
}

static void test_measure(void **state)
{
    (void)state;
    static struct survey s;
    struct survey_params p = {.quick = true, .models_dir = test_tmpdir(), .nvml_path = "/nonexistent/libnvidia-ml.so.1"};
    pb_err err = {0};
    assert_int_equal(survey_run(&p, &s, &err), PB_OK);
    printf("bandwidth %.1f GB/s read, %.1f triad; int8 %.1f GOPS, FP32 %.1f GFLOP/s\n", s.memory.bandwidth_gbs,
           s.memory.triad_gbs, s.compute.int8_gops, s.compute.f32_gflops);
    /* any machine plumb runs on streams more than 0.1 GB/s and less than
     * 100 TB/s; the kernels compute something */
    assert_true(s.memory.bandwidth_gbs > 0.1 && s.memory.bandwidth_gbs < 1e5);
    assert_true(s.memory.triad_gbs > 0.1 && s.memory.triad_gbs < 1e5);
    assert_true(s.compute.int8_gops > 0.01 && s.compute.f32_gflops > 0.01);
    assert_int_equal(s.memory.bw_threads, s.cpu.threads);
    assert_int_equal(s.n_gpus == 0 || strcmp(s.gpus[0].source, "nvml") != 0, 1);
    assert_non_null(strstr(s.gpu_note, "not found"));
}

static void test_nvml(void **state)
{
    (void)state;
    static struct survey s;
    struct survey_params p = {.no_measure = true, .models_dir = test_tmpdir(), .nvml_path = fake_nvml};
    pb_err err = {0};
    assert_int_equal(survey_run(&p, &s, &err), PB_OK);
    assert_true(s.n_gpus >= 1);
    const struct survey_gpu *g = &s.gpus[0];
    assert_string_equal(g->source, "nvml");
    assert_string_equal(g->name, "Fake H100 80GB HBM3");
    assert_string_equal(g->driver, "555.42.06");
    assert_int_equal(g->mem_total, 85520809984ull);
    assert_int_equal(g->mem_free, 85520809984ull - (1ull << 30));
    assert_int_equal(g->cc_major, 9);
    assert_int_equal(g->cc_minor, 0);
    /* 2 transfers x 2619 MHz x 5120 bits / 8 = 3352.32 GB/s */
    assert_true(fabs(g->bandwidth_gbs - 3352.32) < 0.01);
    assert_true(fabs(g->power_limit_w - 700) < 1e-9);
    /* and through the JSON form */
    json_t *j = survey_to_json(&s);
    static struct survey back;
    assert_int_equal(survey_from_json(j, &back, &err), PB_OK);
    json_decref(j);
    assert_string_equal(back.gpus[0].name, g->name);
    assert_int_equal(back.gpus[0].cc_major, 9);
    assert_true(fabs(back.gpus[0].bandwidth_gbs - g->bandwidth_gbs) < 1e-6);
}

static void test_profile_files(void **state)
{
    (void)state;
    static struct survey s, back;
    struct survey_params p = {.no_measure = true, .models_dir = test_tmpdir()};
    pb_err err = {0};
    assert_int_equal(survey_run(&p, &s, &err), PB_OK);
    s.memory.bandwidth_gbs = 21.5;
    s.memory.triad_gbs = 19.25;
    s.compute.int8_gops = 180.5;
    s.compute.f32_gflops = 70.25;
    char dir[512];
    snprintf(dir, sizeof dir, "%s/home/machine", test_tmpdir());
    assert_int_equal(survey_load(dir, &back, &err), PB_EIO); /* none yet */
    assert_non_null(strstr(err.msg, "plumb survey"));
    assert_int_equal(survey_save(&s, dir, &err), PB_OK);
    assert_int_equal(survey_load(dir, &back, &err), PB_OK);
    assert_int_equal(back.cpu.threads, s.cpu.threads);
    assert_int_equal(back.memory.total, s.memory.total);
    assert_true(back.memory.bandwidth_gbs == 21.5 && back.compute.int8_gops == 180.5);
    assert_string_equal(back.cpu.model, s.cpu.model);
    assert_int_equal(back.cpu.n_features, s.cpu.n_features);
    assert_int_equal(back.cpu.n_caches, s.cpu.n_caches);

    /* damaged profiles: the message names the field */
    char path[600];
    snprintf(path, sizeof path, "%s/profile.json", dir);
    json_t *j = survey_to_json(&s);
    json_object_set_new(json_object_get(j, "cpu"), "threads", json_string("two"));
    assert_int_equal(json_dump_file(j, path, 0), 0);
    json_decref(j);
    assert_int_equal(survey_load(dir, &back, &err), PB_EFORMAT);
    assert_non_null(strstr(err.msg, "cpu.threads"));
    j = survey_to_json(&s);
    json_object_del(json_object_get(j, "memory"), "bandwidth_gbs");
    assert_int_equal(json_dump_file(j, path, 0), 0);
    json_decref(j);
    assert_int_equal(survey_load(dir, &back, &err), PB_EFORMAT);
    assert_non_null(strstr(err.msg, "memory.bandwidth_gbs"));
    assert_int_equal(test_write_file(path, "{\"version\": 1, ", 15), 0);
    assert_int_equal(survey_load(dir, &back, &err), PB_EFORMAT);
    assert_non_null(strstr(err.msg, "profile.json:1:"));
}

static void test_calibration(void **state)
{
    (void)state;
    char dir[512];
    snprintf(dir, sizeof dir, "%s/calib", test_tmpdir());
    static struct survey_calib got[SURVEY_MAX_CALIB];
    int n = -1;
    pb_err err = {0};
    assert_int_equal(survey_calib_load(dir, got, SURVEY_MAX_CALIB, &n, &err), PB_OK);
    assert_int_equal(n, 0);
    struct survey_calib r = {.created = "2026-01-01T00:00:00Z", .model = "m (synthesized)", .ftype = "Q4_0",
                             .kernels = "avx2", .threads = 2, .model_bytes = 1000, .weight_bytes = 900,
                             .n_params = 1800, .bandwidth_gbs = 20, .pp_tps = 100, .pp_tokens = 32, .tg_tps = 30,
                             .tg_tokens = 16};
    assert_int_equal(survey_calib_add(dir, &r, &err), PB_OK);
    r.tg_tps = 31; /* the same model, type, kernels and threads: replaced */
    assert_int_equal(survey_calib_add(dir, &r, &err), PB_OK);
    strcpy(r.ftype, "Q8_0");
    assert_int_equal(survey_calib_add(dir, &r, &err), PB_OK);
    assert_int_equal(survey_calib_load(dir, got, SURVEY_MAX_CALIB, &n, &err), PB_OK);
    assert_int_equal(n, 2);
    assert_string_equal(got[0].ftype, "Q4_0");
    assert_true(got[0].tg_tps == 31);
    assert_string_equal(got[1].ftype, "Q8_0");
    assert_int_equal(got[1].weight_bytes, 900);
    /* at most SURVEY_MAX_CALIB, the newest kept */
    for (int i = 0; i < SURVEY_MAX_CALIB + 5; i++) {
        snprintf(r.model, sizeof r.model, "model %d", i);
        assert_int_equal(survey_calib_add(dir, &r, &err), PB_OK);
    }
    assert_int_equal(survey_calib_load(dir, got, SURVEY_MAX_CALIB, &n, &err), PB_OK);
    assert_int_equal(n, SURVEY_MAX_CALIB);
    char want[32];
    snprintf(want, sizeof want, "model %d", SURVEY_MAX_CALIB + 4);
    assert_string_equal(got[n - 1].model, want);
    /* a damaged record is reported by the reader */
    char path[600];
    snprintf(path, sizeof path, "%s/calibration.json", dir);
    const char *bad = "{\"version\":1,\"records\":[{\"created\":\"x\",\"model\":\"m\",\"kernels\":\"avx2\",\"threads\":0,"
                      "\"weight_bytes\":1,\"n_params\":1,\"bandwidth_gbs\":1}]}";
    assert_int_equal(test_write_file(path, bad, strlen(bad)), 0);
    assert_int_equal(survey_calib_load(dir, got, SURVEY_MAX_CALIB, &n, &err), PB_EFORMAT);
    assert_non_null(strstr(err.msg, "threads"));
}

static void test_home(void **state)
{
    (void)state;
    char buf[600];
    pb_err err = {0};
    setenv("PLUMB_HOME", "/srv/plumb", 1);
    assert_int_equal(survey_dir(buf, sizeof buf, &err), PB_OK);
    assert_string_equal(buf, "/srv/plumb/machine");
    assert_int_equal(survey_models_dir(buf, sizeof buf, &err), PB_OK);
    assert_string_equal(buf, "/srv/plumb/blobs"); /* the store's blobs: the disk the models take */
    unsetenv("PLUMB_HOME");
    setenv("XDG_DATA_HOME", "/xdg", 1);
    assert_int_equal(survey_home(buf, sizeof buf, &err), PB_OK);
    assert_string_equal(buf, "/xdg/plumb");
    unsetenv("XDG_DATA_HOME");
    setenv("HOME", "/home/tech", 1);
    assert_int_equal(survey_home(buf, sizeof buf, &err), PB_OK);
    assert_string_equal(buf, "/home/tech/.local/share/plumb");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: test_survey FAKE_NVML_LIBRARY\n");
        return 2;
    }
    fake_nvml = argv[1];
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_facts_match_kernel), cmocka_unit_test(test_measure),
        cmocka_unit_test(test_nvml),               cmocka_unit_test(test_profile_files),
        cmocka_unit_test(test_calibration),        cmocka_unit_test(test_home),
    };
    return cmocka_run_group_tests_name("survey", tests, NULL, NULL);
}
