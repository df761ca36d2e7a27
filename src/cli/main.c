/* main.c — the zlora command line: git-style subcommands. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "base/base.h"
#include "cli/cli.h"
#include "nn/ops.h"

typedef struct { const char *name; int (*fn)(int, char **); const char *help; } command;

static const command commands[] = {
    {"generate", zl_cmd_generate, "text to image with Z-Image Turbo or Base, with LoRA stacks"},
    {"train", zl_cmd_train, "train a LoRA by the base, turbo-adapter or turbo-direct route"},
    {"lora", zl_cmd_lora, "inspect, check, convert, merge and resize LoRA files"},
    {"info", zl_cmd_info, "show the tensors of a safetensors file or model folder and what it is"},
    {"convert-model", zl_cmd_convert_model, "rewrite a checkpoint as one file in bf16/f16/f32, streaming"},
    {"score", zl_cmd_score, "sharpness of images and their difference from reference images"},
    {"compare", zl_cmd_compare, "seeds x prompts x configurations: LoRA grids, metrics, flags and an HTML report"},
    {"debug", zl_cmd_debug, "tools for tests, parity checks and bug reports"},
    {"bench", zl_cmd_bench, "speed measurements (see bench/ for the comparisons with PyTorch)"},
};

static void usage(FILE *f) {
    fprintf(f, "zlora %s — train and use LoRAs for the Z-Image family, in one C program\n\n", ZL_VERSION);
    fprintf(f, "usage: zlora <command> [options]   (zlora <command> --help for details)\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof *commands; i++)
        fprintf(f, "  %-14s %s\n", commands[i].name, commands[i].help);
    fprintf(f, "  %-14s %s\n", "help", "this text");
    fprintf(f, "\noptions (before the command): --version, -q (quiet), -v (verbose), --threads N (default: all cores;\n"
               "  models narrower than 1024 run on one thread unless --threads or OMP_NUM_THREADS says otherwise)\n");
}

int main(int argc, char **argv) {
    while (argc > 1 && (strcmp(argv[1], "-q") == 0 || strcmp(argv[1], "-v") == 0 || strcmp(argv[1], "--threads") == 0)) {
        if (strcmp(argv[1], "--threads") == 0) {
            char *end;
            long t = argc > 2 ? strtol(argv[2], &end, 10) : 0;
            if (argc < 3 || *end || t < 1 || t > 1024) { fprintf(stderr, "error: --threads needs a number from 1 to 1024\n"); return 2; }
            zl_ops_set_threads((int)t);
            zl_cli_threads = (int)t;
            argv += 2; argc -= 2;
            continue;
        }
        zl_log_level = argv[1][1] == 'q' ? 0 : 2;
        argv++; argc--;
    }
    if (argc < 2 || strcmp(argv[1], "help") == 0 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        if (argc >= 3 && strcmp(argv[1], "help") == 0) {
            char *sub[] = {argv[2], "--help", NULL};
            for (size_t i = 0; i < sizeof commands / sizeof *commands; i++)
                if (strcmp(commands[i].name, argv[2]) == 0) return commands[i].fn(2, sub);
        }
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "version") == 0) {
        printf("zlora %s\n", ZL_VERSION);
        return 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof *commands; i++)
        if (strcmp(commands[i].name, argv[1]) == 0) return commands[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "error: unknown command '%s' (see 'zlora help')\n", argv[1]);
    return 2;
}
