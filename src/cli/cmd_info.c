/* cmd_info.c — `zlora info FILE|FOLDER` (placeholder until implemented). */
#include <stdio.h>
#include "base/base.h"
#include "cli/cli.h"

int zl_cli_fail(void) {
    fprintf(stderr, "error: %s\n", zl_last_error());
    return 1;
}

int zl_cmd_info(int argc, char **argv) {
    (void)argc; (void)argv;
    return zl_err("info: not implemented yet"), zl_cli_fail();
}
