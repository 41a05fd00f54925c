# cowbd — one plain Makefile.  See README.md.
#   make                build everything into build/
#   make run            deps + build + start cowbd on var/pool.img with vol0
#   make check          deps + build + every test; ends "N passed, N failed"
#   make check SANITIZE=address,undefined
#   make deps           apt-get what the build and tests need (root), else print the command

CC       ?= cc
BUILD    ?= build
SANITIZE ?=
PKGS     := libev-dev liburcu-dev libcmocka-dev libjansson-dev libgnutls28-dev
TESTPKGS := nbd-client nbd-server libnbd-bin python3-libnbd nbdkit qemu-utils \
            qemu-system-x86 fio gnutls-bin busybox-static cpio e2fsprogs util-linux \
            valgrind procps psmisc curl ca-certificates clang-format python3

WARN     := -Wall -Wextra -Wshadow -Wvla -Wstrict-prototypes -Wmissing-prototypes \
            -Wno-unused-parameter
ifeq ($(CI),true)
WARN     += -Werror
endif
URCU_CFLAGS := $(shell pkg-config --cflags liburcu-memb 2>/dev/null)
URCU_LIBS   := $(shell pkg-config --libs liburcu-memb liburcu-cds 2>/dev/null || echo -lurcu-memb -lurcu-cds -lurcu-common)
CFLAGS   ?= -O2 -g
GNUTLS_CFLAGS := $(shell pkg-config --cflags gnutls 2>/dev/null)
CFLAGS   += -std=gnu11 $(WARN) -Iinclude $(URCU_CFLAGS) $(GNUTLS_CFLAGS) -D_GNU_SOURCE -pthread
LDLIBS   := -lev -ljansson $(URCU_LIBS) -lgnutls -pthread
ifneq ($(SANITIZE),)
CFLAGS   += -fsanitize=$(SANITIZE) -fno-omit-frame-pointer -fno-sanitize-recover=all
LDFLAGS  += -fsanitize=$(SANITIZE)
BUILD    := build-san
endif

# Library objects: every src/*.c except the daemon's main.
LIB_SRC  := $(filter-out src/main.c,$(wildcard src/*.c))
LIB_OBJ  := $(patsubst src/%.c,$(BUILD)/obj/%.o,$(LIB_SRC))
UNIT_SRC := $(wildcard tests/unit/test_*.c)
UNIT_BIN := $(patsubst tests/unit/%.c,$(BUILD)/tests/%,$(UNIT_SRC))
TOOL_SRC := $(wildcard tools/*.c)
TOOL_BIN := $(patsubst tools/%.c,$(BUILD)/%,$(TOOL_SRC))
# libFuzzer targets: see the fuzz rules below.
FUZZ_CC      ?= clang
FUZZ_SECONDS ?= 60
FUZZ_BUILD   := build-fuzz
FUZZ_SRC     := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_NAMES   := $(patsubst tests/fuzz/%.c,%,$(FUZZ_SRC))
FUZZ_REPLAY  := $(patsubst %,$(BUILD)/tests/test_%,$(FUZZ_NAMES))
FUZZ_CFLAGS  := -O1 -g -std=gnu11 -Iinclude -Isrc $(URCU_CFLAGS) $(GNUTLS_CFLAGS) -D_GNU_SOURCE \
                -pthread -fsanitize=address,undefined -fno-sanitize-recover=all \
                -fno-omit-frame-pointer
FUZZ_OBJ     := $(patsubst src/%.c,$(FUZZ_BUILD)/obj/%.o,$(LIB_SRC))

.PHONY: all run check check-unit check-integration check-vm bench fuzz deps-fuzz lint deps install clean
all: $(BUILD)/cowbd $(TOOL_BIN) $(UNIT_BIN) $(FUZZ_REPLAY)

$(BUILD)/obj/%.o: src/%.c $(wildcard include/*.h src/*.h) | $(BUILD)/obj
	$(CC) $(CFLAGS) -c -o $@ $<
$(BUILD)/libcowbd.a: $(LIB_OBJ)
	rm -f $@; ar rcs $@ $^
$(BUILD)/cowbd: $(BUILD)/obj/main.o $(BUILD)/libcowbd.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)
$(BUILD)/%: tools/%.c $(BUILD)/libcowbd.a $(wildcard include/*.h)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(BUILD)/libcowbd.a $(LDLIBS)
$(BUILD)/tests/%: tests/unit/%.c $(BUILD)/libcowbd.a $(wildcard include/*.h tests/unit/*.h)
	@mkdir -p $(BUILD)/tests
	$(CC) $(CFLAGS) -UNDEBUG $(LDFLAGS) -o $@ $< $(BUILD)/libcowbd.a $(LDLIBS) -lcmocka
$(BUILD)/obj:
	mkdir -p $@

# libFuzzer targets (tests/fuzz/fuzz_*.c).  `make fuzz` builds them with
# clang, ASan and UBSan into build-fuzz/ and runs each for FUZZ_SECONDS;
# `make check` replays their corpus and saved crashes through
# build/tests/test_fuzz_* (gcc, tests/fuzz/replay.c).
$(FUZZ_REPLAY): $(BUILD)/tests/test_%: tests/fuzz/%.c tests/fuzz/replay.c $(BUILD)/libcowbd.a \
                $(wildcard include/*.h src/*.h)
	@mkdir -p $(BUILD)/tests
	$(CC) $(CFLAGS) -Isrc -UNDEBUG -DFUZZ_TARGET='"$*"' -DFUZZ_TOP='"$(CURDIR)"' $(LDFLAGS) \
	    -o $@ $< tests/fuzz/replay.c $(BUILD)/libcowbd.a $(LDLIBS)
$(FUZZ_BUILD)/obj/%.o: src/%.c $(wildcard include/*.h src/*.h)
	@mkdir -p $(FUZZ_BUILD)/obj
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -c -o $@ $<
$(addprefix $(FUZZ_BUILD)/,$(FUZZ_NAMES)): $(FUZZ_BUILD)/%: tests/fuzz/%.c $(FUZZ_OBJ)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer -o $@ $< $(FUZZ_OBJ) $(LDLIBS)
FUZZPKGS := clang libclang-rt-14-dev
deps-fuzz:
	@sh tools/deps.sh $(FUZZPKGS)
fuzz: deps-fuzz $(addprefix $(FUZZ_BUILD)/,$(FUZZ_NAMES))
	@sh tests/fuzz/run.sh $(FUZZ_BUILD) $(FUZZ_SECONDS) $(FUZZ_NAMES)

deps:
	@sh tools/deps.sh $(PKGS) -- $(TESTPKGS)

run: deps
	@$(MAKE) --no-print-directory all
	@sh tools/run.sh $(BUILD)

check: deps
	@$(MAKE) --no-print-directory all
	@sh tests/run.sh $(BUILD) all

check-unit: all
	@sh tests/run.sh $(BUILD) unit
check-integration: all
	@sh tests/run.sh $(BUILD) integration
check-vm: all
	@sh tests/run.sh $(BUILD) vm

bench: deps
	@$(MAKE) --no-print-directory all
	@bash bench/bench.sh $(BUILD)

lint:
	clang-format --dry-run --Werror src/*.c include/*.h tools/*.c tests/unit/*.c

install: all
	install -D -m 0755 $(BUILD)/cowbd $(DESTDIR)/usr/local/sbin/cowbd
	install -D -m 0755 $(BUILD)/cowctl $(DESTDIR)/usr/local/bin/cowctl
	install -D -m 0755 $(BUILD)/cowbd-check $(DESTDIR)/usr/local/sbin/cowbd-check

clean:
	rm -rf build build-san build-fuzz
