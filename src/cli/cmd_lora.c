/* cmd_lora.c — `zlora lora ...` (placeholder until implemented). */
#include <stdio.h>
#include "base/base.h"
#include "cli/cli.h"

int zl_cmd_lora(int argc, char **argv) {
    (void)argc; (void)argv;
    return zl_err("lora: not implemented yet"), zl_cli_fail();
}
