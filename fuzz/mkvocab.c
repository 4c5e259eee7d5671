/* Writes one of the fuzz targets' vocabularies (fuzz.h) as a GGUF file,
 * for fuzz/seeds.sh:
 *
 *   fuzz_mkvocab OUT spm|bpe [PRE] [TEMPLATE_FILE] [ARCH]
 *
 * PRE, TEMPLATE_FILE and ARCH may be "-" (none). */
#include "fuzz.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *opt(int argc, char **argv, int i)
{
    return i < argc && strcmp(argv[i], "-") ? argv[i] : NULL;
}

int main(int argc, char **argv)
{
    if (argc < 3 || (strcmp(argv[2], "spm") && strcmp(argv[2], "bpe"))) {
        fprintf(stderr, "usage: %s OUT spm|bpe [PRE] [TEMPLATE_FILE] [ARCH]\n", argv[0]);
        return 2;
    }
    char *tmpl = NULL;
    size_t len;
    if (opt(argc, argv, 4) && !(tmpl = fuzz_read_file(argv[4], &len))) {
        fprintf(stderr, "%s: cannot read %s\n", argv[0], argv[4]);
        return 1;
    }
    const struct fuzz_vocab v = {.bpe = !strcmp(argv[2], "bpe"), .pre = opt(argc, argv, 3),
                                 .add_space_prefix = -1, .add_bos = -1, .chat_template = tmpl,
                                 .arch = opt(argc, argv, 5)};
    uint8_t *img = fuzz_vocab_bytes(&v, &len);
    FILE *fp = fopen(argv[1], "wb");
    if (!fp || fwrite(img, 1, len, fp) != len || fclose(fp)) {
        fprintf(stderr, "%s: cannot write %s\n", argv[0], argv[1]);
        return 1;
    }
    free(img);
    free(tmpl);
    return 0;
}
