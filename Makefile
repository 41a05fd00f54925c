# cowbd — one plain Makefile (GNU make).  See README.md.
#   make                build everything into build/
#   make run            deps + build + start cowbd on var/pool.img with vol0
#   make check          deps + build + every test; ends "N passed, N failed"
#   make check SANITIZE=address,undefined
#   make deps           apt-get what the build and tests need (root), else print the command
#   make install        cowbd, cowctl, cowbd-check, the systemd units, sysusers.d
#                       and tmpfiles.d entries into $(DESTDIR)$(PREFIX), the sample
#                       cowbd.conf into $(DESTDIR)$(SYSCONFDIR)/cowbd (/etc for PREFIX=/usr)
#   make deb            the Debian package (debian/) into $(BUILD)/deb/, lintian-checked
#
# CFLAGS, CPPFLAGS, LDFLAGS and LDLIBS are the user's (default CFLAGS -O2 -g);
# what the build needs is kept in COWBD_* and added after them, so
# `make CFLAGS='-O0 -g3'` still builds.  A change of flags rebuilds the
# objects ($(BUILD)/flags); header dependencies come from -MMD (*.d).

# No built-in rules: the .d files must not look like something to link.
MAKEFLAGS += --no-builtin-rules
.SUFFIXES:
.DELETE_ON_ERROR:

CC       ?= cc
BUILD    ?= build
SANITIZE ?=
PREFIX   ?= /usr/local
BINDIR   ?= $(PREFIX)/bin
SBINDIR  ?= $(PREFIX)/sbin
MANDIR   ?= $(PREFIX)/share/man
BASHCOMPDIR ?= $(PREFIX)/share/bash-completion/completions
SYSTEMDUNITDIR ?= $(PREFIX)/lib/systemd/system
SYSUSERSDIR    ?= $(PREFIX)/lib/sysusers.d
TMPFILESDIR    ?= $(PREFIX)/lib/tmpfiles.d
SYSCONFDIR     ?= $(if $(filter /usr,$(PREFIX)),/etc,$(PREFIX)/etc)
INSTALL  ?= install
PKGS     := libev-dev liburcu-dev libcmocka-dev libjansson-dev libgnutls28-dev libsystemd-dev \
            libinih-dev libmicrohttpd-dev librados-dev
TESTPKGS := nbd-client nbd-server libnbd-bin python3-libnbd nbdkit qemu-utils \
            qemu-system-x86 fio gnutls-bin busybox-static cpio e2fsprogs util-linux \
            valgrind procps psmisc curl ca-certificates clang-format python3 systemd strace \
            prometheus ceph-mon ceph-mgr ceph-osd ceph-common liburing-dev

CFLAGS   ?= -O2 -g
WARN     := -Wall -Wextra -Wshadow -Wvla -Wstrict-prototypes -Wmissing-prototypes \
            -Wno-unused-parameter
ifeq ($(CI),true)
WARN     += -Werror
endif
URCU_CFLAGS   := $(shell pkg-config --cflags liburcu-memb 2>/dev/null)
URCU_LIBS     := $(shell pkg-config --libs liburcu-memb liburcu-cds 2>/dev/null || echo -lurcu-memb -lurcu-cds -lurcu-common)
GNUTLS_CFLAGS := $(shell pkg-config --cflags gnutls 2>/dev/null)
SYSTEMD_CFLAGS := $(shell pkg-config --cflags libsystemd 2>/dev/null)
SYSTEMD_LIBS  := $(shell pkg-config --libs libsystemd 2>/dev/null || echo -lsystemd)
INIH_CFLAGS   := $(shell pkg-config --cflags inih 2>/dev/null)
INIH_LIBS     := $(shell pkg-config --libs inih 2>/dev/null || echo -linih)
MHD_CFLAGS    := $(shell pkg-config --cflags libmicrohttpd 2>/dev/null)
MHD_LIBS      := $(shell pkg-config --libs libmicrohttpd 2>/dev/null || echo -lmicrohttpd)
DEPFLAGS      := -MMD -MP
# Required flags, appended after the user's.
COWBD_CFLAGS  := -std=gnu11 $(WARN) -Iinclude $(URCU_CFLAGS) $(GNUTLS_CFLAGS) $(SYSTEMD_CFLAGS) \
                 $(INIH_CFLAGS) $(MHD_CFLAGS) -D_GNU_SOURCE -pthread
# --version (include/version.h): `git describe`, or version.h's release number outside git.
# It goes into a generated header ($(BUILD)/gen/cowbd-version.h), not into the flags, so that a
# new commit rebuilds only the few objects that print it, not every object.
COWBD_VERSION ?= $(shell git describe --always --dirty 2>/dev/null)
COWBD_CFLAGS  += -I$(BUILD)/gen
COWBD_LDFLAGS := -pthread
COWBD_LIBS    := -lev -ljansson $(URCU_LIBS) -lgnutls $(SYSTEMD_LIBS) $(INIH_LIBS) $(MHD_LIBS) -lrados
ifneq ($(SANITIZE),)
COWBD_CFLAGS  += -fsanitize=$(SANITIZE) -fno-omit-frame-pointer -fno-sanitize-recover=all
COWBD_LDFLAGS += -fsanitize=$(SANITIZE)
BUILD    := build-san
endif
# Tests and fuzz targets also see the private headers and tests/lib/, and keep assert.
TEST_CFLAGS   := -Itests/lib -Isrc -UNDEBUG

COMPILE  = $(CC) $(CPPFLAGS) $(CFLAGS) $(COWBD_CFLAGS) $(DEPFLAGS)
LINK     = $(CC) $(CFLAGS) $(LDFLAGS) $(COWBD_LDFLAGS)

# Library objects: every src/*.c except the daemon's main.
LIB_SRC  := $(filter-out src/main.c,$(wildcard src/*.c))
LIB_OBJ  := $(patsubst src/%.c,$(BUILD)/obj/%.o,$(LIB_SRC))
LIB      := $(BUILD)/libcowbd.a
# What each tool links besides its own object (a narrower list than the
# whole library keeps the store out of a tool that does not need it).
COWCTL_OBJ  ?= $(BUILD)/obj/names.o
COWCTL_LIBS ?= -ljansson
CHECK_OBJ   ?= $(LIB)
CHECK_LIBS  ?= $(COWBD_LIBS)
TOOL_SRC := $(wildcard tools/*.c)
TOOL_BIN := $(patsubst tools/%.c,$(BUILD)/%,$(TOOL_SRC))
TOOL_OBJ := $(patsubst tools/%.c,$(BUILD)/obj/tools/%.o,$(TOOL_SRC))
# Shared test helpers (tests/lib/*.c), linked into unit tests and fuzz binaries.
TESTLIB_SRC := $(wildcard tests/lib/*.c)
TESTLIB_OBJ := $(patsubst tests/lib/%.c,$(BUILD)/obj/testlib/%.o,$(TESTLIB_SRC))
TESTLIB     := $(if $(TESTLIB_OBJ),$(BUILD)/libcowtest.a)
UNIT_SRC := $(wildcard tests/unit/test_*.c)
UNIT_BIN := $(patsubst tests/unit/%.c,$(BUILD)/tests/%,$(UNIT_SRC))
UNIT_OBJ := $(patsubst tests/unit/%.c,$(BUILD)/obj/unit/%.o,$(UNIT_SRC))
# libFuzzer targets: see the fuzz rules below.
FUZZ_CC      ?= clang
FUZZ_SECONDS ?= 60
FUZZ_BUILD   := build-fuzz
FUZZ_SRC     := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_NAMES   := $(patsubst tests/fuzz/%.c,%,$(FUZZ_SRC))
FUZZ_REPLAY  := $(patsubst %,$(BUILD)/tests/test_%,$(FUZZ_NAMES))
FUZZ_REPLAY_OBJ := $(patsubst %,$(BUILD)/obj/fuzz/%.o,$(FUZZ_NAMES)) \
                   $(patsubst %,$(BUILD)/obj/fuzz/replay-%.o,$(FUZZ_NAMES))
FUZZ_CFLAGS  := -O1 -g -std=gnu11 -Iinclude $(TEST_CFLAGS) $(URCU_CFLAGS) $(GNUTLS_CFLAGS) \
                -D_GNU_SOURCE -pthread -fsanitize=address,undefined -fno-sanitize-recover=all \
                -fno-omit-frame-pointer
FUZZ_OBJ     := $(patsubst src/%.c,$(FUZZ_BUILD)/obj/%.o,$(LIB_SRC))
FUZZ_TESTLIB_OBJ := $(patsubst tests/lib/%.c,$(FUZZ_BUILD)/obj/testlib/%.o,$(TESTLIB_SRC))
FUZZ_TESTLIB := $(if $(FUZZ_TESTLIB_OBJ),$(FUZZ_BUILD)/libcowtest.a)
FUZZ_MAIN_OBJ := $(patsubst %,$(FUZZ_BUILD)/obj/fuzz/%.o,$(FUZZ_NAMES))
FUZZ_BIN     := $(addprefix $(FUZZ_BUILD)/,$(FUZZ_NAMES))

BENCH_SRC := $(wildcard bench/*.c)
BENCH_BIN := $(patsubst bench/%.c,$(BUILD)/bench-%,$(BENCH_SRC))
ALL_OBJ  := $(LIB_OBJ) $(BUILD)/obj/main.o $(TOOL_OBJ) $(TESTLIB_OBJ) $(UNIT_OBJ) $(FUZZ_REPLAY_OBJ) \
            $(patsubst bench/%.c,$(BUILD)/obj/bench/%.o,$(BENCH_SRC))

.PHONY: all run check check-unit check-integration check-vm bench fuzz deps-fuzz lint deps \
        install install-systemd install-config uninstall deb clean FORCE
all: $(BUILD)/cowbd $(TOOL_BIN) $(UNIT_BIN) $(FUZZ_REPLAY)

# $(BUILD)/flags holds the compile command; it changes (and every object
# rebuilds) only when the flags do.  Binaries relink when the Makefile changes.
FLAGS_NOW := $(CC) $(CPPFLAGS) $(CFLAGS) $(COWBD_CFLAGS)
$(BUILD)/flags: FORCE
	@mkdir -p $(@D)
	@echo '$(FLAGS_NOW)' | cmp -s - $@ || echo '$(FLAGS_NOW)' >$@

# Rewritten only when the version changes; objects that include version.h
# depend on it through their .d files, every object waits for it to exist.
VERSION_H := $(BUILD)/gen/cowbd-version.h
$(VERSION_H): FORCE
	@mkdir -p $(@D)
	@{ [ -z '$(COWBD_VERSION)' ] || printf '#define COWBD_VERSION "%s"\n' '$(COWBD_VERSION)'; } >$@.tmp
	@cmp -s $@.tmp $@ && rm $@.tmp || mv $@.tmp $@

$(BUILD)/obj/%.o: src/%.c $(BUILD)/flags | $(VERSION_H)
	@mkdir -p $(@D)
	$(COMPILE) -c -o $@ $<
$(BUILD)/obj/tools/%.o: tools/%.c $(BUILD)/flags | $(VERSION_H)
	@mkdir -p $(@D)
	$(COMPILE) -c -o $@ $<
$(BUILD)/obj/testlib/%.o: tests/lib/%.c $(BUILD)/flags
	@mkdir -p $(@D)
	$(COMPILE) $(TEST_CFLAGS) -c -o $@ $<
$(BUILD)/obj/unit/%.o: tests/unit/%.c $(BUILD)/flags | $(VERSION_H)
	@mkdir -p $(@D)
	$(COMPILE) $(TEST_CFLAGS) -c -o $@ $<
$(LIB): $(LIB_OBJ)
	rm -f $@; ar rcs $@ $^
$(BUILD)/libcowtest.a: $(TESTLIB_OBJ)
	rm -f $@; ar rcs $@ $^

$(BUILD)/cowbd: $(BUILD)/obj/main.o $(LIB) Makefile
	$(LINK) -o $@ $(filter %.o %.a,$^) $(LDLIBS) $(COWBD_LIBS)
$(BUILD)/cowctl: $(BUILD)/obj/tools/cowctl.o $(COWCTL_OBJ) Makefile
	$(LINK) -o $@ $(filter %.o %.a,$^) $(LDLIBS) $(COWCTL_LIBS)
$(BUILD)/cowbd-check: $(BUILD)/obj/tools/cowbd-check.o $(CHECK_OBJ) Makefile
	$(LINK) -o $@ $(filter %.o %.a,$^) $(LDLIBS) $(CHECK_LIBS)
$(filter-out $(BUILD)/cowctl $(BUILD)/cowbd-check,$(TOOL_BIN)): $(BUILD)/%: \
                $(BUILD)/obj/tools/%.o $(LIB) Makefile
	$(LINK) -o $@ $(filter %.o %.a,$^) $(LDLIBS) $(COWBD_LIBS)
# Benchmarks that drive the store directly (bench/*.c): built by `make bench`.
$(BUILD)/obj/bench/%.o: bench/%.c $(BUILD)/flags
	@mkdir -p $(@D)
	$(COMPILE) -c -o $@ $<
$(BUILD)/bench-%: $(BUILD)/obj/bench/%.o $(LIB) Makefile
	$(LINK) -o $@ $(filter %.o %.a,$^) $(LDLIBS) $(COWBD_LIBS)

$(UNIT_BIN): $(BUILD)/tests/%: $(BUILD)/obj/unit/%.o $(TESTLIB) $(LIB) Makefile
	@mkdir -p $(@D)
	$(LINK) -o $@ $(filter %.o %.a,$^) $(LDLIBS) $(COWBD_LIBS) -lcmocka

# libFuzzer targets (tests/fuzz/fuzz_*.c).  `make fuzz` builds them with
# clang, ASan and UBSan into build-fuzz/ and runs each for FUZZ_SECONDS;
# `make check` replays their corpus and saved crashes through
# build/tests/test_fuzz_* (gcc, tests/fuzz/replay.c).
$(BUILD)/obj/fuzz/%.o: tests/fuzz/%.c $(BUILD)/flags
	@mkdir -p $(@D)
	$(COMPILE) $(TEST_CFLAGS) -c -o $@ $<
$(BUILD)/obj/fuzz/replay-%.o: tests/fuzz/replay.c $(BUILD)/flags
	@mkdir -p $(@D)
	$(COMPILE) $(TEST_CFLAGS) -DFUZZ_TARGET='"$*"' -DFUZZ_TOP='"$(CURDIR)"' -c -o $@ $<
$(FUZZ_REPLAY): $(BUILD)/tests/test_%: $(BUILD)/obj/fuzz/%.o $(BUILD)/obj/fuzz/replay-%.o \
                $(TESTLIB) $(LIB) Makefile
	@mkdir -p $(@D)
	$(LINK) -o $@ $(filter %.o %.a,$^) $(LDLIBS) $(COWBD_LIBS)
$(FUZZ_BUILD)/obj/%.o: src/%.c
	@mkdir -p $(@D)
	$(FUZZ_CC) $(FUZZ_CFLAGS) $(DEPFLAGS) -fsanitize=fuzzer-no-link -c -o $@ $<
$(FUZZ_BUILD)/obj/testlib/%.o: tests/lib/%.c
	@mkdir -p $(@D)
	$(FUZZ_CC) $(FUZZ_CFLAGS) $(DEPFLAGS) -fsanitize=fuzzer-no-link -c -o $@ $<
$(FUZZ_BUILD)/obj/fuzz/%.o: tests/fuzz/%.c
	@mkdir -p $(@D)
	$(FUZZ_CC) $(FUZZ_CFLAGS) $(DEPFLAGS) -fsanitize=fuzzer -c -o $@ $<
$(FUZZ_BUILD)/libcowtest.a: $(FUZZ_TESTLIB_OBJ)
	rm -f $@; ar rcs $@ $^
$(FUZZ_BIN): $(FUZZ_BUILD)/%: $(FUZZ_BUILD)/obj/fuzz/%.o $(FUZZ_TESTLIB) $(FUZZ_OBJ)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer -o $@ $^ $(COWBD_LIBS)
FUZZPKGS := clang libclang-rt-14-dev
deps-fuzz:
	@sh tools/deps.sh $(FUZZPKGS)
fuzz: deps-fuzz $(FUZZ_BIN)
	@sh tests/fuzz/run.sh $(FUZZ_BUILD) $(FUZZ_SECONDS) $(FUZZ_NAMES)

# A throwaway Ceph cluster for the RADOS tests (tests/ceph/, docs/RADOS.md): its packages are
# part of TESTPKGS (`make deps`); deps-ceph installs only them.
CEPH_PKGS := ceph-mon ceph-mgr ceph-osd ceph-common librados-dev
.PHONY: deps-ceph
deps-ceph:
	@sh tools/deps.sh $(CEPH_PKGS)

-include $(patsubst %.o,%.d,$(ALL_OBJ) $(FUZZ_OBJ) $(FUZZ_TESTLIB_OBJ) $(FUZZ_MAIN_OBJ))

# `make deb`, and debootstrap for the VM tier's systemd guest (which installs the .deb).
DEBPKGS  := build-essential dpkg-dev debhelper lintian pkg-config
TESTPKGS += debootstrap
deps:
	@sh tools/deps.sh $(PKGS) -- $(TESTPKGS) $(DEBPKGS)

# The targets that build before they run compile on every CPU (a plain
# `make all` keeps make's default of one job unless given -j).
NPROC := $(shell nproc 2>/dev/null || echo 1)
run: deps
	@$(MAKE) --no-print-directory -j$(NPROC) all
	@sh tools/run.sh $(BUILD)

check: deps
	@$(MAKE) --no-print-directory -j$(NPROC) all
	@bash tests/run.sh $(BUILD) all

check-unit:
	@$(MAKE) --no-print-directory -j$(NPROC) all
	@bash tests/run.sh $(BUILD) unit
check-integration:
	@$(MAKE) --no-print-directory -j$(NPROC) all
	@bash tests/run.sh $(BUILD) integration
check-vm:
	@$(MAKE) --no-print-directory -j$(NPROC) all
	@bash tests/run.sh $(BUILD) vm

bench: deps
	@$(MAKE) --no-print-directory -j$(NPROC) all $(BENCH_BIN)
	@bash bench/bench.sh $(BUILD)

LINT_SRC := $(wildcard src/*.c src/*.h include/*.h tools/*.c tools/*.h \
              tests/unit/*.c tests/unit/*.h tests/fuzz/*.c tests/fuzz/*.h tests/lib/*.c tests/lib/*.h)
lint:
	clang-format --dry-run --Werror $(LINT_SRC)

# Builds only what it installs (no unit tests, so no cmocka).  Man pages:
# man/*.[1-8], when there are any.  The units (dist/systemd/) name
# /usr/sbin/cowbd; installed, they name $(SBINDIR)/cowbd.
INSTALL_MAN   := $(wildcard man/*.[1-8])
INSTALL_UNITS := cowbd.service cowbd@.service cowbd.socket cowbd-control.socket
install: $(BUILD)/cowbd $(BUILD)/cowctl $(BUILD)/cowbd-check install-systemd install-config
	$(INSTALL) -D -m 0755 $(BUILD)/cowbd $(DESTDIR)$(SBINDIR)/cowbd
	$(INSTALL) -D -m 0755 $(BUILD)/cowctl $(DESTDIR)$(BINDIR)/cowctl
	$(INSTALL) -D -m 0755 $(BUILD)/cowbd-check $(DESTDIR)$(SBINDIR)/cowbd-check
	$(INSTALL) -D -m 0644 dist/bash-completion/cowctl $(DESTDIR)$(BASHCOMPDIR)/cowctl
	@for m in $(INSTALL_MAN); do \
		d=$(DESTDIR)$(MANDIR)/man$${m##*.}; \
		echo "$(INSTALL) -D -m 0644 $$m $$d/$${m##*/}"; \
		$(INSTALL) -D -m 0644 $$m $$d/$${m##*/} || exit 1; \
	done
# The systemd units, sysusers.d and tmpfiles.d entries alone (no build):
# tests/integration/systemd_units.sh installs them into a scratch root.
install-systemd:
	$(INSTALL) -d -m 0755 $(DESTDIR)$(SYSTEMDUNITDIR)
	@for u in $(INSTALL_UNITS); do \
		echo "install dist/systemd/$$u $(DESTDIR)$(SYSTEMDUNITDIR)/$$u"; \
		sed -e 's|/usr/sbin/cowbd|$(SBINDIR)/cowbd|g' \
			-e 's|/etc/cowbd/cowbd.conf|$(SYSCONFDIR)/cowbd/cowbd.conf|g' \
			-e 's|/etc/cowbd/%i.conf|$(SYSCONFDIR)/cowbd/%i.conf|g' dist/systemd/$$u \
			>$(DESTDIR)$(SYSTEMDUNITDIR)/$$u && \
		chmod 0644 $(DESTDIR)$(SYSTEMDUNITDIR)/$$u || exit 1; \
	done
	$(INSTALL) -D -m 0644 dist/systemd/cowbd.sysusers $(DESTDIR)$(SYSUSERSDIR)/cowbd.conf
	$(INSTALL) -D -m 0644 dist/systemd/cowbd.tmpfiles $(DESTDIR)$(TMPFILESDIR)/cowbd.conf
# The sample configuration (dist/cowbd.conf), installed only where there is
# none: an operator's file is never overwritten, and uninstall removes it
# only while it is the sample unchanged.
CONFIG_FILE := $(DESTDIR)$(SYSCONFDIR)/cowbd/cowbd.conf
install-config:
	@if [ -e $(CONFIG_FILE) ]; then \
		echo "keeping $(CONFIG_FILE) (the new sample is dist/cowbd.conf)"; \
	else \
		echo "$(INSTALL) -D -m 0644 dist/cowbd.conf $(CONFIG_FILE)"; \
		$(INSTALL) -D -m 0644 dist/cowbd.conf $(CONFIG_FILE); \
	fi
uninstall:
	@if cmp -s dist/cowbd.conf $(CONFIG_FILE); then \
		echo "rm -f $(CONFIG_FILE)"; rm -f $(CONFIG_FILE); \
		rmdir $(DESTDIR)$(SYSCONFDIR)/cowbd 2>/dev/null || true; \
	elif [ -e $(CONFIG_FILE) ]; then \
		echo "keeping $(CONFIG_FILE): it is not the sample"; \
	fi
	rm -f $(DESTDIR)$(SBINDIR)/cowbd $(DESTDIR)$(BINDIR)/cowctl $(DESTDIR)$(SBINDIR)/cowbd-check
	rm -f $(DESTDIR)$(BASHCOMPDIR)/cowctl
	rm -f $(addprefix $(DESTDIR)$(SYSTEMDUNITDIR)/,$(INSTALL_UNITS)) \
		$(DESTDIR)$(SYSUSERSDIR)/cowbd.conf $(DESTDIR)$(TMPFILESDIR)/cowbd.conf
	@for m in $(INSTALL_MAN); do \
		f=$(DESTDIR)$(MANDIR)/man$${m##*.}/$${m##*/}; echo "rm -f $$f"; rm -f $$f; \
	done

# The Debian package (debian/): dpkg-buildpackage -us -uc -b on a copy of
# the tree's files (git's list: tracked and untracked, not ignored) in
# $(BUILD)/deb/, so the .deb and its by-products land there and the tree
# is left as it was; then lintian, which must report no error.  Up to date
# (nothing rebuilt) while the copy is the same as the last one built.
# DEB_BUILD_OPTIONS=nocheck skips the package's unit-test run.
deb:
	@sh tools/deps.sh $(PKGS) -- $(DEBPKGS)
	@for p in $(PKGS); do \
		sed -n '/^Build-Depends:/,/^$$/p' debian/control | grep -qw -- "$$p" || \
			{ echo "make deb: $$p (PKGS) is not in debian/control's Build-Depends" >&2; exit 1; }; \
	done
	@mkdir -p $(BUILD)/deb
	@git ls-files -co --exclude-standard | while read -r f; do [ -f "$$f" ] && echo "$$f"; done \
		>$(BUILD)/deb/files && tr '\n' '\0' <$(BUILD)/deb/files | xargs -0 sha256sum >$(BUILD)/deb/sums.new
	@if cmp -s $(BUILD)/deb/sums.new $(BUILD)/deb/sums && ls $(BUILD)/deb/cowbd_*.deb >/dev/null 2>&1; then \
		rm $(BUILD)/deb/sums.new; echo "make deb: up to date: $$(ls $(BUILD)/deb/cowbd_*.deb)"; \
	else \
		rm -rf $(BUILD)/deb/cowbd $(BUILD)/deb/sums $(BUILD)/deb/cowbd_* $(BUILD)/deb/cowbd-dbgsym_* && \
		mkdir $(BUILD)/deb/cowbd && tar -cf - -T $(BUILD)/deb/files | tar -C $(BUILD)/deb/cowbd -xf - && \
		echo "make deb: dpkg-buildpackage in $(BUILD)/deb/cowbd (log: $(BUILD)/deb/build.log)" && \
		(cd $(BUILD)/deb/cowbd && dpkg-buildpackage -us -uc -b -Jauto) >$(BUILD)/deb/build.log 2>&1 || \
			{ tail -n 30 $(BUILD)/deb/build.log; exit 1; }; \
		lintian --allow-root --fail-on error $(BUILD)/deb/cowbd_*.deb || exit 1; \
		mv $(BUILD)/deb/sums.new $(BUILD)/deb/sums; \
		ls $(BUILD)/deb/cowbd_*.deb; \
	fi

clean:
	rm -rf $(BUILD) build-san $(FUZZ_BUILD)
