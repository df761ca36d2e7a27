/* cli_common.c — helpers shared by the subcommands (see cli.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "base/base.h"
#include "cli/cli.h"
#include "nn/ops.h"

int zl_cli_fail(void) {
    fprintf(stderr, "error: %s\n", zl_last_error());
    return 1;
}

void zl_cli_split_strength(const char *arg, char *path, size_t n, float *s) {
    const char *c = strrchr(arg, ':');
    char *end;
    *s = 1.0f;
    if (c && c[1]) {
        double v = strtod(c + 1, &end);
        if (*end == 0) {
            *s = (float)v;
            snprintf(path, n, "%.*s", (int)(c - arg), arg);
            return;
        }
    }
    snprintf(path, n, "%s", arg);
}

int zl_cli_threads = 0;

void zl_cli_auto_threads(int model_width) { zl_ops_auto_threads(model_width); }
