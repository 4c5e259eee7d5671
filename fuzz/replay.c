/* Replays inputs through a fuzz target without libFuzzer: the test suite's
 * driver for the regression files (and the seed corpora), built with any
 * compiler and run under the suite's sanitizers.
 *
 *   replay_TARGET PATH...   each PATH a file, or a folder of them
 *
 * Each file is read into a buffer of exactly its size (so that an
 * overread is an AddressSanitizer error) and passed to
 * LLVMFuzzerTestOneInput. A crash is the failure; the file name is
 * printed first so the log says which input it was.
 */
#include "fuzz.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static int run_file(const char *path)
{
    size_t len;
    char *text = fuzz_read_file(path, &len);
    if (!text) {
        fprintf(stderr, "replay: cannot read %s\n", path);
        return 1;
    }
    uint8_t *data = malloc(len ? len : 1);
    if (!data) {
        free(text);
        return 1;
    }
    memcpy(data, text, len);
    free(text);
    printf("replay %s (%zu bytes)\n", path, len);
    fflush(stdout);
    LLVMFuzzerTestOneInput(data, len);
    free(data);
    return 0;
}

static int cmp_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The regular files of a folder, in name order (not recursive). */
static int run_dir(const char *dir, int *count)
{
    DIR *d = opendir(dir);
    if (!d) {
        fprintf(stderr, "replay: cannot open %s\n", dir);
        return 1;
    }
    char **names = NULL;
    size_t n = 0;
    for (struct dirent *e; (e = readdir(d));) {
        if (e->d_name[0] == '.')
            continue;
        char **nn = realloc(names, (n + 1) * sizeof *names);
        if (!nn)
            break;
        names = nn;
        size_t dl = strlen(dir), len = dl + strlen(e->d_name) + 2;
        if (!(names[n] = malloc(len)))
            break;
        snprintf(names[n++], len, "%.*s/%s", (int)(dl > 1 && dir[dl - 1] == '/' ? dl - 1 : dl), dir, e->d_name);
    }
    closedir(d);
    qsort(names, n, sizeof *names, cmp_name);
    int rc = 0;
    for (size_t i = 0; i < n; i++) {
        struct stat st;
        if (stat(names[i], &st) == 0 && S_ISREG(st.st_mode)) {
            rc |= run_file(names[i]);
            (*count)++;
        }
        free(names[i]);
    }
    free(names);
    return rc;
}

int main(int argc, char **argv)
{
    int rc = 0, count = 0;
    for (int i = 1; i < argc; i++) {
        struct stat st;
        if (stat(argv[i], &st) != 0) {
            /* a target without regressions yet has no folder; its seed
             * corpus (the first argument) must exist */
            printf("replay: %s does not exist%s\n", argv[i], i == 1 ? "" : ", skipped");
            rc |= i == 1;
            continue;
        }
        if (S_ISDIR(st.st_mode)) {
            rc |= run_dir(argv[i], &count);
        } else {
            rc |= run_file(argv[i]);
            count++;
        }
    }
    if (count == 0) /* a replay of nothing passes nothing */
        rc = 1;
    printf("replay: %d inputs, %s\n", count, rc ? "errors" : "all passed");
    return rc;
}
