/* Air-gap bundles as they arrive (src/store/bundle.c): the input is the
 * bundle file, a tar stream (or a compressed one), verified by
 * store_import (check_only): its first entry must be manifest.json, then
 * each blob the manifest lists, of its size and SHA-256 and a valid
 * GGUF. libarchive reads the tar; plumb's part is what it does with the
 * entries. */
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_import_bundle(data, size);
    return 0;
}
