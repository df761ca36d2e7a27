/* cli.h — subcommand entry points (argv[0] is the subcommand name) and shared CLI helpers. */
#ifndef ZL_CLI_H
#define ZL_CLI_H
int zl_cmd_lora(int argc, char **argv);
int zl_cmd_generate(int argc, char **argv);
int zl_cmd_train(int argc, char **argv);
int zl_cmd_debug_dit_grad(int argc, char **argv); /* in cmd_train.c */
int zl_cmd_debug_noise(int argc, char **argv);  /* in cmd_generate.c */
int zl_cmd_debug_sigmas(int argc, char **argv);
int zl_cmd_info(int argc, char **argv);
int zl_cmd_debug(int argc, char **argv);
int zl_cmd_debug_nano_data(int argc, char **argv); /* in cmd_nano.c */
int zl_cmd_bench(int argc, char **argv);
int zl_cmd_convert_model(int argc, char **argv);
int zl_cmd_score(int argc, char **argv);
int zl_cmd_compare(int argc, char **argv);
/* --threads N given before the command (0: not given). */
extern int zl_cli_threads;
/* zl_ops_auto_threads (see nn/ops.h). */
void zl_cli_auto_threads(int model_width);
/* Prints "error: <zl_last_error()>" and returns exit code 1. */
int zl_cli_fail(void);
/* Splits "path[:strength]" (the last ':' followed by a number); strength 1 when absent. */
#include <stddef.h>
void zl_cli_split_strength(const char *arg, char *path, size_t n, float *s);
#endif
