/* cmd_random.h — `zlora debug random-dit` and `zlora debug random-te`: random full-size (or tiny)
 * checkpoints in the real release layouts, written streaming (never the whole model in memory), for
 * the memory and speed benchmarks in bench/ and for tests. argv[0] is the tool name. Both return the
 * process exit code (0, 1 error, 2 usage). */
#ifndef ZL_CMD_RANDOM_H
#define ZL_CMD_RANDOM_H
int zl_cmd_debug_random_dit(int argc, char **argv);
int zl_cmd_debug_random_te(int argc, char **argv);
#endif
