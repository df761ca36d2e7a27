/* tiny_model.c — end-to-end tests need a whole model folder (what `zlora generate --model DIR` reads): one
 * is assembled in the test's scratch folder from the test models by symlinks (DiT tiny_a, Qwen3 tiny_a,
 * the real tokenizer cut to 1000 ids, VAE tiny_a) plus a model_index.json and a scheduler config. */
#include "test.h"
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int zl_test_make_tiny_model(const char *dir, double shift) {
    char cwd[PATH_MAX], p[PATH_MAX + 64], t[PATH_MAX + 200], cmd[PATH_MAX + 64];
    if (!getcwd(cwd, sizeof cwd)) return -1;
    snprintf(cmd, sizeof cmd, "mkdir -p '%s/scheduler'", dir);
    if (system(cmd)) return -1;
    const char *links[4][2] = {{"transformer", "tests/data/zimage/tiny_a/diffusers/transformer"},
                               {"text_encoder", "tests/data/qwen3/tiny_a/text_encoder"},
                               {"tokenizer", "tests/data/tokenizer/tiny"},
                               {"vae", "tests/data/vae/tiny_a/diffusers/vae"}};
    for (int i = 0; i < 4; i++) {
        snprintf(p, sizeof p, "%s/%s", dir, links[i][0]);
        snprintf(t, sizeof t, "%s/%s", cwd, links[i][1]);
        if (access(p, F_OK) != 0 && symlink(t, p)) return -1;
    }
    snprintf(p, sizeof p, "%s/scheduler/scheduler_config.json", dir);
    FILE *f = fopen(p, "w");
    if (!f) return -1;
    fprintf(f, "{\"_class_name\": \"FlowMatchEulerDiscreteScheduler\", \"num_train_timesteps\": 1000, \"use_dynamic_shifting\": false, \"shift\": %g}\n",
            shift);
    fclose(f);
    snprintf(p, sizeof p, "%s/model_index.json", dir);
    f = fopen(p, "w");
    if (!f) return -1;
    fputs("{\"_class_name\": \"ZImagePipeline\", \"_diffusers_version\": \"0.36.0.dev0\"}\n", f);
    fclose(f);
    return 0;
}

const char *zl_test_tiny_model(void) {
    static char dir[600];
    if (dir[0]) return dir;
    char d[600];
    snprintf(d, sizeof d, "%s/tiny_model", zl_test_dir());
    if (zl_test_make_tiny_model(d, 3.0)) return NULL;
    memcpy(dir, d, sizeof dir);
    return dir;
}
