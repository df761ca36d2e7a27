/* cmd_te.h — `zlora debug te`: runs the Qwen3 text encoder on a prompt (or on token ids) and writes the
 * caption features the DiT takes. argv[0] is "te". Returns the process exit code (0, 1 error, 2 usage). */
#ifndef ZL_CMD_TE_H
#define ZL_CMD_TE_H
int zl_cmd_debug_te(int argc, char **argv);
#endif
