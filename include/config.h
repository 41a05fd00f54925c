/* config.h — cowbd.conf, the daemon's configuration file, and the
 * per-export access rules it holds (docs/OPERATIONS.md, cowbd.conf(5)).
 *
 * The file is INI, read with inih: a [cowbd] section whose keys are the
 * daemon's long options, handed one by one to the caller's schema (the
 * daemon parses their values exactly as it parses its command line), and
 * one [export NAME] section per export with its access rules, parsed here:
 *
 *   allow = CIDR, CIDR...   networks whose clients may use the export
 *                           (repeatable; "none": no network)
 *   allow-unix = yes|no     clients on the NBD unix socket (default: yes
 *                           without allow, no with it)
 *   read-only = yes|no      refuse writes even on a writable volume
 *   tls-identity = ID       a PSK username or an X.509 subject DN
 *                           (repeatable); only TLS clients with one of
 *                           them may use the export
 *
 * Every error names the file and line of the first bad line.  Addresses
 * are matched as IPv6: an IPv4 address is its v4-mapped form
 * ::ffff:a.b.c.d, so 10.0.0.0/8 matches a v4-mapped peer of a dual-stack
 * socket too.
 *
 * Layer: base (names below it; sockets' types, no I/O but reading the
 * file).  A loaded config is immutable: share it read-only between
 * threads; whoever swaps one for another (the daemon at SIGHUP) decides
 * when the old one may go.
 */
#ifndef COWBD_CONFIG_H
#define COWBD_CONFIG_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "names.h"

/* Read at start when it exists and no --config names another. */
#define CONFIG_DEFAULT_PATH "/etc/cowbd/cowbd.conf"

/* Room for one error line: "FILE:LINE: reason". */
#define CONFIG_ERR_MAX 512

/* A network: the first prefix bits of addr (IPv6; IPv4 v4-mapped). */
struct config_cidr {
	uint8_t addr[16];
	unsigned prefix; /* 0..128 */
};

/* Parse "ADDR/BITS" or "ADDR" (a single host), IPv4 or IPv6.  Host bits
 * set below the prefix (10.0.0.1/8) are refused: a typo more often than
 * not.  0, or -EINVAL with a one-line reason in why. */
int config_cidr_parse(const char *s, struct config_cidr *out, char *why, size_t whylen);

/* Is the address sa (AF_INET or AF_INET6; anything else: no) inside c? */
bool config_cidr_match(const struct config_cidr *c, const struct sockaddr *sa);

/* One [export NAME] section. */
struct config_export {
	char name[NAMES_FULL_MAX + 1];
	unsigned line; /* of its [export NAME] line */
	struct config_cidr *allow;
	size_t nallow;
	bool has_allow; /* an allow key was given: only those networks */
	bool allow_unix;
	bool read_only;
	unsigned allow_unix_line, read_only_line; /* of those keys, 0: not given */
	char **ids;                               /* tls-identity values; none: TLS not required */
	size_t nids;
};

/* The caller's [cowbd] keys.  set() gets each key = value in file order
 * (value stays valid until config_free) and returns 0, -ENOENT (no such
 * key) or -EINVAL with the reason in why.  Keys named in repeatable may
 * appear more than once; any other key twice is an error. */
struct config_schema {
	int (*set)(void *arg, const char *key, const char *value, char *why, size_t whylen);
	void *arg;
	const char *const *repeatable; /* NULL-terminated, or NULL */
};

struct config;

/* Read the file at path, calling schema->set for its [cowbd] keys.
 * Returns the config, or NULL with one line in err ("PATH:LINE: reason",
 * or "cannot read PATH: reason") and errno set (EINVAL for a bad line).
 * Stops at the first bad line.  Blocks on file I/O. */
struct config *config_load(const char *path, const struct config_schema *schema, char *err,
                           size_t errlen);

/* The file a config was read from. */
const char *config_path(const struct config *cfg);

/* The rules for export name (a volume "VOL" or a snapshot "VOL@SNAP"): its
 * own section, else (for a snapshot) its volume's; NULL when neither
 * exists (no rules: every client may use it).  cfg NULL: NULL. */
const struct config_export *config_export_find(const struct config *cfg, const char *name);

/* Sections in file order, for listing: the i-th, or NULL past the last. */
const struct config_export *config_export_at(const struct config *cfg, size_t i);

/* May this client use export e?  peer: its address (AF_UNIX for the unix
 * socket); tls_id: its TLS identity (PSK username or X.509 subject DN),
 * NULL without TLS.  NULL when it may, else why not ("address not
 * allowed", ...), a static string for a log line.  e NULL: NULL. */
const char *config_export_denies(const struct config_export *e, const struct sockaddr *peer,
                                 const char *tls_id);

/* "yes"/"no" (also true/false, on/off, 1/0).  0, or -EINVAL. */
int config_parse_bool(const char *s, bool *out);

/* Free a config (NULL: no-op). */
void config_free(struct config *cfg);

#endif
