/* cmd_tokenize.h — `zlora debug tokenize`: the Qwen3 tokenizer on a list of prompts (parity checks
 * against the reference tokenizer, bug reports). */
#ifndef ZL_CMD_TOKENIZE_H
#define ZL_CMD_TOKENIZE_H
/* argv[0] is the tool name ("tokenize"); returns the exit code (0, 1 on bad input, 2 on usage). */
int zl_cmd_debug_tokenize(int argc, char **argv);
#endif
