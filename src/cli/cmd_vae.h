/* cmd_vae.h — `zlora debug vae`: runs the VAE encoder or decoder on tensors from a file. */
#ifndef ZL_CMD_VAE_H
#define ZL_CMD_VAE_H
/* argv[0] is the tool name ("vae"); returns the exit code (0, 1 on errors, 2 on usage errors). */
int zl_cmd_debug_vae(int argc, char **argv);
#endif
