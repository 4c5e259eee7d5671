/* A directory of models from a removable disk (plumb pull DIR): its
 * SHA256SUMS file (sha256sum's "HEX  NAME" / "HEX *NAME" lines) read by
 * store_scan_dir. The input is that file; the folder also holds a few
 * empty .gguf files (names with a space, upper-case suffix) for its lines
 * to name. Every digest it reports must be 64 lower-case hex digits. */
#include "fuzz.h"

#include "plumb/store.h"

#include <stdio.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char dir[4200], sums[4300];
    if (!dir[0]) {
        snprintf(dir, sizeof dir, "%s", fuzz_tmpdir("sums"));
        static const char *const names[] = {"a.gguf", "b b.gguf", "C.GGUF", "notes.txt"};
        for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
            char path[4300];
            snprintf(path, sizeof path, "%s/%s", dir, names[i]);
            FILE *fp = fopen(path, "w");
            FUZZ_CHECK(fp && fclose(fp) == 0, "cannot create %s", path);
        }
        snprintf(sums, sizeof sums, "%s/SHA256SUMS", dir);
    }
    FILE *fp = fopen(sums, "wb");
    FUZZ_CHECK(fp && fwrite(data, 1, size, fp) == size && fclose(fp) == 0, "cannot write %s", sums);
    struct store_dir_item *items;
    size_t n;
    bool have;
    pb_err err = {0};
    int rc = store_scan_dir(dir, &items, &n, &have, &err);
    fuzz_note("scan: %s", rc ? err.msg : "ok");
    if (rc != PB_OK)
        return 0;
    FUZZ_CHECK(have && n == 3, "%zu models, SHA256SUMS %s", n, have ? "seen" : "not seen");
    for (size_t i = 0; i < n; i++) {
        const char *d = items[i].sha256;
        FUZZ_CHECK(!d[0] || (strlen(d) == 64 && strspn(d, "0123456789abcdef") == 64), "digest '%s'", d);
    }
    store_dir_free(items, n);
    return 0;
}
