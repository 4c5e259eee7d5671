#include "cli.h"
int cmd_quantize(int argc, char **argv) { (void)argc; (void)argv; return 1; }
int cmd_synth(int argc, char **argv) { (void)argc; (void)argv; return 1; }
