/* version.h — the version every binary prints for --version (cowbd,
 * cowctl, cowbd-check) and the control socket reports (ping).
 *
 * One place: the Makefile writes COWBD_VERSION from `git describe
 * --always --dirty` when building in a git checkout (or from the make
 * variable of that name: `make COWBD_VERSION=1.2-3` for a package build)
 * into the generated header $(BUILD)/gen/cowbd-version.h, rewritten only
 * when it changes; outside git the release number below is used.
 */
#ifndef COWBD_VERSION_H
#define COWBD_VERSION_H

#if defined(__has_include)
#if __has_include("cowbd-version.h")
#include "cowbd-version.h"
#endif
#endif

#ifndef COWBD_VERSION
#define COWBD_VERSION "0.1.0"
#endif

#endif
