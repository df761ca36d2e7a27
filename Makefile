# zlora — build, test and demo. `make` builds ./zlora; `make test` runs every test (plain and under
# ASan+UBSan, plus bounded fuzzing); `make demo` runs the seed experiment on the nano models. Both install missing packages first.
CC      ?= cc
CLANG   ?= clang
OPT     ?= -O2
WERROR  ?= -Werror
CFLAGS  ?= $(OPT) -g
BLAS_INC = -I/usr/include/x86_64-linux-gnu/openblas-pthread
ALL_CFLAGS = -std=c11 -D_GNU_SOURCE -Wall -Wextra $(WERROR) -fopenmp $(BLAS_INC) $(if $(wildcard /usr/include/oneapi/dnnl/dnnl.h),-DZL_HAVE_DNNL) -Isrc $(CFLAGS)
# Pango + cairo draw the labels of compare's grids (src/eval/grid.c only needs their headers)
PANGO_CFLAGS := $(patsubst -I%,-isystem %,$(shell pkg-config --cflags pangocairo fontconfig 2>/dev/null))
PANGO_LIBS   := $(shell pkg-config --libs pangocairo fontconfig 2>/dev/null || echo -lpangocairo-1.0 -lpango-1.0 -lgobject-2.0 -lglib-2.0 -lcairo -lfontconfig)
# OpenBLAS's OpenMP build when installed (libopenblas0-openmp), found first through the run path: one
# thread pool with oneDNN and the ops. With the pthread build (Debian's default alternative) its threads
# spin in sched_yield after each sgemm and take the cores from the OpenMP work that follows: a bf16
# training step of one block at 1024 tokens took 3.95 s against 3.44 s (docs/PERFORMANCE.md).
BLAS_OMP = /usr/lib/x86_64-linux-gnu/openblas-openmp
comma := ,
BLAS_RPATH = $(if $(wildcard $(BLAS_OMP)/libopenblas.so.0),-Wl$(comma)-rpath$(comma)$(BLAS_OMP))
LDLIBS  = $(PANGO_LIBS) -lcjson -lpcre2-8 -lutf8proc -lpng -ljpeg -lwebp -llapacke -lopenblas $(BLAS_RPATH) $(if $(wildcard /usr/include/oneapi/dnnl/dnnl.h),-ldnnl) -lm -lpthread -fopenmp

LIB_SRC  = $(sort $(filter-out src/cli/main.c,$(wildcard src/*/*.c)))
CLI_SRC  = src/cli/main.c
TEST_SRC = $(sort $(wildcard tests/test_*.c)) tests/tiny_model.c
HDRS     = $(wildcard src/*/*.h) tests/test.h

BUILD ?= build
LIB_OBJ  = $(LIB_SRC:%.c=$(BUILD)/%.o)

.PHONY: all deps test test-plain test-asan test-clang fuzz demo demo-toolbox clean clang check-deps goldens zimage-weights nano-data nano-models
# Debian's python (numpy, torch) for the reference scripts, also where a pyenv shim shadows it
PYTHON ?= $(shell test -x /usr/bin/python3 && echo /usr/bin/python3 || echo python3)
export PYTHON
all: zlora

# V=1 shows the full compiler command lines
Q = $(if $(V),,@)
$(BUILD)/%.o: %.c $(HDRS)
	@mkdir -p $(dir $@)
	@$(if $(V),,echo "  CC    $<  ($(BUILD))")
	$(Q)$(CC) $(ALL_CFLAGS) -c $< -o $@

$(BUILD)/src/eval/grid.o: ALL_CFLAGS += $(PANGO_CFLAGS)

$(BUILD)/libzlora.a: $(LIB_OBJ)
	@rm -f $@
	$(Q)ar rcs $@ $^

zlora: $(BUILD)/src/cli/main.o $(BUILD)/libzlora.a
	@$(if $(V),,echo "  LINK  $@")
	$(Q)$(CC) $(ALL_CFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/test_zlora: $(TEST_SRC) tests/test_main.c $(BUILD)/libzlora.a $(HDRS)
	@$(if $(V),,echo "  LINK  $@")
	$(Q)$(CC) $(ALL_CFLAGS) -Itests -o $@ $(filter %.c,$^) $(BUILD)/libzlora.a $(LDLIBS)

deps:
	@sh scripts/deps.sh

# The sanitizer build lives in build-asan/ and never mixes with the optimised objects.
ASAN_FLAGS = -O1 -g -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer

test: deps
	@$(MAKE) --no-print-directory test-plain
	@$(MAKE) --no-print-directory test-clang
	@$(MAKE) --no-print-directory test-asan
	@$(MAKE) --no-print-directory fuzz
	@sh tests/summary.sh

# regenerate every Z-Image golden, LoRA and weight file (needs python3-torch)
goldens:
	$(PYTHON) tests/ref/zimage_ref.py --out tests/data/zimage
	$(PYTHON) tests/ref/zimage_grad_ref.py --out tests/data/zimage
	$(PYTHON) tests/ref/qwen3_ref.py --out tests/data/qwen3
	$(PYTHON) tests/ref/vae_ref.py --out tests/data/vae
	$(PYTHON) tests/data/images/make_images.py
	$(PYTHON) tests/ref/sample_ref.py --out tests/data/gen
	$(PYTHON) tests/ref/make_tiny_tokenizer.py
	$(PYTHON) tests/ref/score_ref.py
	$(PYTHON) tests/ref/optim_ref.py
# recreate the git-ignored tiny-model weight files (numpy only, ~1 s) and check weights.sha256
zimage-weights:
	@$(PYTHON) tests/ref/zimage_ref.py --out tests/data/zimage --weights-only
	@$(PYTHON) tests/ref/qwen3_ref.py --out tests/data/qwen3 --weights-only
	@$(PYTHON) tests/ref/vae_ref.py --out tests/data/vae --weights-only

test-plain: zlora $(BUILD)/test_zlora zimage-weights
	@ZLORA=./zlora sh tests/run.sh $(BUILD)/test_zlora plain

test-asan: zimage-weights
	@$(MAKE) --no-print-directory BUILD=build-asan CFLAGS="$(ASAN_FLAGS)" build-asan/test_zlora zlora-asan
	@ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 LSAN_OPTIONS=suppressions=$(CURDIR)/tests/lsan.supp UBSAN_OPTIONS=print_stacktrace=1 \
	  ZLORA=./build-asan/zlora sh tests/run.sh build-asan/test_zlora asan

zlora-asan: $(BUILD)/src/cli/main.o $(BUILD)/libzlora.a
	@$(if $(V),,echo "  LINK  $(BUILD)/zlora")
	$(Q)$(CC) $(ALL_CFLAGS) -o $(BUILD)/zlora $^ $(LDLIBS)

# clang must build everything warning-free too (the tests themselves run in the gcc builds)
test-clang:
	@$(MAKE) --no-print-directory BUILD=build-clang CC=$(CLANG) build-clang/test_zlora
	@echo "clang: build ok" 

FUZZ_SECONDS ?= 20
FUZZ_TARGETS = $(patsubst tests/fuzz/%.c,%,$(wildcard tests/fuzz/fuzz_*.c))
fuzz:
	@FUZZ_LIBS="$(filter-out -fopenmp,$(LDLIBS))" FUZZ_DEFS="$(filter -D%,$(ALL_CFLAGS)) $(PANGO_CFLAGS)" \
	  sh tests/fuzz/run.sh "$(CLANG)" "$(FUZZ_SECONDS)" $(FUZZ_TARGETS)

demo: deps zlora
	@sh scripts/demo.sh
demo-toolbox: deps zlora
	@sh scripts/demo_toolbox.sh

# the nano model family (models/nano/, see its README; not part of `make test`): nano-data makes the
# procedural data sets in build/nano (seconds); nano-models remakes every committed nano part (tokenizer,
# text encoder, VAE training on the CPU with python3-torch, goldens, the nano DiTs trained by zlora)
nano-data: zlora
	@sh models/nano/make.sh data
nano-models: zlora
	@sh models/nano/make.sh

clean:
	rm -rf build build-asan build-clang build-fuzz zlora
