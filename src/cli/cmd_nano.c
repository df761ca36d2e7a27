/* cmd_nano.c — `zlora debug nano-data`: the procedural data sets of the nano model family
 * (train/nano_data.h; models/nano/make.sh uses it). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"
#include "cli/cli.h"
#include "train/nano_data.h"

static const char *usage =
    "usage: zlora debug nano-data --out DIR [--count N] [--seed S] [--size PX] [--samples N] [--character zxq | --wide]\n"
    "  writes NAME.png + NAME.txt (caption) per scene: simple shapes (circle, square, triangle, star, ring,\n"
    "  cross) in 12 colours, 3 sizes, 9 places, on plain / two-tone / gradient backgrounds, 1-2 objects\n"
    "  --count N      scenes (default 1000; 8 with --character)\n"
    "  --seed S       scene i depends only on (S, i): the same seed gives the same bytes (default 0)\n"
    "  --size PX      image side (default 64: 8x8 latents with the factor-8 nano VAE)\n"
    "  --samples N    anti-aliasing: N x N samples per pixel (default 4)\n"
    "  --character zxq  the character set instead: a diamond in magenta/lime/magenta bands (no base scene has it),\n"
    "                 captioned \"a photo of [trigger] at the left on a green background\"\n"
    "  --wide         the VAE's extra set instead: 1-4 turned, overlapping shapes (diamonds too) with stripes,\n"
    "                 checkers and outlines in any colours (wide_NNNNN.png; captions only list the objects)\n";

static int parse_int(const char *s, long lo, long hi, long *v) {
    char *end;
    errno = 0;
    long x = strtol(s, &end, 10);
    if (!*s || *end || errno || x < lo || x > hi) return -1;
    *v = x;
    return 0;
}

int zl_cmd_debug_nano_data(int argc, char **argv) {
    zl_nano_data_opts o;
    zl_nano_data_default_opts(&o);
    int have_count = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int more = i + 1 < argc;
        long v;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { fputs(usage, stdout); return 0; }
        else if (!strcmp(a, "--out") && more) o.out = argv[++i];
        else if (!strcmp(a, "--character") && more) o.character = argv[++i];
        else if (!strcmp(a, "--wide")) o.wide = 1;
        else if (!strcmp(a, "--count") && more) {
            if (parse_int(argv[++i], 1, 10000000, &v)) return zl_err("debug nano-data: --count must be 1..10000000"), zl_cli_fail();
            o.count = (int)v;
            have_count = 1;
        } else if (!strcmp(a, "--size") && more) {
            if (parse_int(argv[++i], 8, 4096, &v)) return zl_err("debug nano-data: --size must be 8..4096"), zl_cli_fail();
            o.size = (int)v;
        } else if (!strcmp(a, "--samples") && more) {
            if (parse_int(argv[++i], 1, 16, &v)) return zl_err("debug nano-data: --samples must be 1..16"), zl_cli_fail();
            o.ss = (int)v;
        } else if (!strcmp(a, "--seed") && more) {
            const char *s = argv[++i];
            char *end;
            errno = 0;
            unsigned long long x = strtoull(s, &end, 10);
            if (!*s || *end || errno || *s == '-') return zl_err("debug nano-data: --seed must be a non-negative integer"), zl_cli_fail();
            o.seed = x;
        } else {
            fprintf(stderr, "error: debug nano-data: unexpected argument '%s'\n%s", a, usage);
            return 2;
        }
    }
    if (!o.out) {
        fprintf(stderr, "error: debug nano-data: --out is required\n%s", usage);
        return 2;
    }
    if (o.character && !have_count) o.count = 8;
    double t0 = zl_now();
    if (zl_nano_data_write(&o)) return zl_cli_fail();
    zl_info("wrote %d %s scenes (%dx%d) to %s in %.1f s", o.count, o.character ? o.character : o.wide ? "wide" : "base", o.size, o.size,
            o.out, zl_now() - t0);
    return 0;
}
