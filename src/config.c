/* config.c — cowbd.conf: reading the INI file (inih does the key = value
 * lines; this file does sections, line numbers, duplicates and the
 * [export NAME] keys) and matching a client against an export's access
 * rules.  The grammar is in config.h and cowbd.conf(5).
 *
 * Line numbers: inih reads the file through config_read_line, which
 * counts lines, so every message names the line being parsed.  That
 * reader also strips leading blanks (inih would take an indented line for
 * the continuation of the previous value), refuses over-long lines (inih
 * would cut them in two) and recognises section lines itself (inih keeps
 * only 50 bytes of a section name and says nothing of an empty section).
 *
 * Layer: base.  No locks: a config is built by one thread and immutable
 * once config_load returns.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <ini.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"

struct config {
	char *path;
	struct config_export *exports;
	size_t nexports;
	char **strs; /* [cowbd] values handed to the schema */
	size_t nstrs;
};

/* ---- addresses ------------------------------------------------------- */

/* sa's address as 16 bytes of IPv6 (IPv4 v4-mapped).  false: not IP. */
static bool addr16(const struct sockaddr *sa, uint8_t a[16])
{
	struct sockaddr_in in;
	struct sockaddr_in6 in6;

	if (sa->sa_family == AF_INET) {
		memcpy(&in, sa, sizeof(in));
		memset(a, 0, 10);
		a[10] = a[11] = 0xff;
		memcpy(a + 12, &in.sin_addr, 4);
		return true;
	}
	if (sa->sa_family == AF_INET6) {
		memcpy(&in6, sa, sizeof(in6));
		memcpy(a, &in6.sin6_addr, 16);
		return true;
	}
	return false;
}

/* Do a and b agree on their first bits bits? */
static bool prefix_equal(const uint8_t *a, const uint8_t *b, unsigned bits)
{
	unsigned full = bits / 8, rem = bits % 8;

	if (memcmp(a, b, full))
		return false;
	return !rem || !((a[full] ^ b[full]) & (0xffu << (8 - rem)) & 0xffu);
}

int config_cidr_parse(const char *s, struct config_cidr *out, char *why, size_t whylen)
{
	const char *slash = strchr(s, '/');
	size_t n = slash ? (size_t)(slash - s) : strlen(s);
	char addr[INET6_ADDRSTRLEN], net[INET6_ADDRSTRLEN];
	unsigned max, base, bits;
	uint8_t masked[16] = {0};
	char *end;

	memset(out, 0, sizeof(*out));
	if (n == 0 || n >= sizeof(addr))
		goto not_addr;
	memcpy(addr, s, n);
	addr[n] = '\0';
	if (inet_pton(AF_INET, addr, out->addr + 12) == 1) {
		out->addr[10] = out->addr[11] = 0xff;
		max = 32, base = 96;
	} else if (inet_pton(AF_INET6, addr, out->addr) == 1) {
		max = 128, base = 0;
	} else {
		goto not_addr;
	}
	bits = max;
	if (slash) {
		unsigned long v;

		errno = 0;
		v = strtoul(slash + 1, &end, 10);
		if (slash[1] < '0' || slash[1] > '9' || *end || errno || v > max) {
			snprintf(why, whylen, "'%s': the prefix length must be 0 to %u", s, max);
			return -EINVAL;
		}
		bits = (unsigned)v;
	}
	out->prefix = base + bits;
	memcpy(masked, out->addr, out->prefix / 8);
	if (out->prefix % 8)
		masked[out->prefix / 8] =
		    out->addr[out->prefix / 8] & (0xffu << (8 - out->prefix % 8));
	if (base)
		memcpy(masked, out->addr, 12);
	if (memcmp(masked, out->addr, 16)) {
		inet_ntop(base ? AF_INET : AF_INET6, masked + (base ? 12 : 0), net, sizeof(net));
		snprintf(why, whylen, "'%s' has host bits set (the network is %s/%u)", s, net,
		         bits);
		return -EINVAL;
	}
	return 0;

not_addr:
	snprintf(why, whylen, "'%s' is not an IPv4 or IPv6 address or network", s);
	return -EINVAL;
}

bool config_cidr_match(const struct config_cidr *c, const struct sockaddr *sa)
{
	uint8_t a[16];

	return addr16(sa, a) && prefix_equal(a, c->addr, c->prefix);
}

int config_parse_bool(const char *s, bool *out)
{
	static const char *const yes[] = {"yes", "true", "on", "1"}, *const no[] = {"no", "false",
	                                                                            "off", "0"};

	for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
		if (!strcasecmp(s, yes[i]) || !strcasecmp(s, no[i])) {
			*out = !strcasecmp(s, yes[i]);
			return 0;
		}
	}
	return -EINVAL;
}

/* ---- reading the file ------------------------------------------------ */

enum section { SEC_NONE, SEC_COWBD, SEC_EXPORT };

/* A [cowbd] key seen, for duplicates. */
struct seen_key {
	char *name;
	unsigned line;
};

struct parse {
	struct config *cfg;
	const struct config_schema *schema;
	FILE *f;
	char *buf;
	size_t cap;
	unsigned line;
	enum section sec;
	unsigned cowbd_line; /* of [cowbd], 0: not seen yet */
	struct seen_key *seen;
	size_t nseen;
	unsigned err_line; /* the first bad line, 0: none yet */
	char *err;
	size_t errlen;
};

/* Record the first problem, at the current line.  Returns 0 (inih's
 * "error" from a handler). */
static int __attribute__((format(printf, 2, 3))) bad(struct parse *p, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (p->err_line)
		return 0;
	p->err_line = p->line;
	n = snprintf(p->err, p->errlen, "%s:%u: ", p->cfg->path, p->line);
	va_start(ap, fmt);
	if (n >= 0 && (size_t)n < p->errlen)
		vsnprintf(p->err + n, p->errlen - (size_t)n, fmt, ap);
	va_end(ap);
	return 0;
}

static struct config_export *cur_export(struct parse *p)
{
	return &p->cfg->exports[p->cfg->nexports - 1];
}

/* "[export NAME]": a new export's rules. */
static int section_export(struct parse *p, const char *name)
{
	char msg[NAMES_MSG_MAX];
	struct config_export *e;

	if (names_check(name, NAMES_ANY, msg, sizeof(msg)))
		return bad(p, "[export %s]: %s", name, msg);
	for (size_t i = 0; i < p->cfg->nexports; i++)
		if (!strcmp(p->cfg->exports[i].name, name))
			return bad(p, "duplicate section [export %s] (first at line %u)", name,
			           p->cfg->exports[i].line);
	e = realloc(p->cfg->exports, (p->cfg->nexports + 1) * sizeof(*e));
	if (!e)
		return bad(p, "out of memory");
	p->cfg->exports = e;
	e = &e[p->cfg->nexports++];
	memset(e, 0, sizeof(*e));
	snprintf(e->name, sizeof(e->name), "%s", name);
	e->line = p->line;
	p->sec = SEC_EXPORT;
	return 1;
}

/* A line that starts with '[' (blanks stripped): which section begins.
 * 1, or 0 after bad(). */
static int section_line(struct parse *p, char *s)
{
	char *end = strchr(s, ']'), *rest, *name;

	if (!end)
		return bad(p, "'[' without ']'");
	rest = end + 1 + strspn(end + 1, " \t");
	if (*rest && *rest != ';' && *rest != '#')
		return bad(p, "text after the section's ']'");
	*end = '\0';
	name = s + 1 + strspn(s + 1, " \t");
	while (end > name && (end[-1] == ' ' || end[-1] == '\t'))
		*--end = '\0';
	if (!strcmp(name, "cowbd")) {
		if (p->cowbd_line)
			return bad(p, "duplicate section [cowbd] (first at line %u)",
			           p->cowbd_line);
		p->cowbd_line = p->line;
		p->sec = SEC_COWBD;
		return 1;
	}
	if (!strncmp(name, "export", 6) && (name[6] == ' ' || name[6] == '\t')) {
		return section_export(p, name + 6 + strspn(name + 6, " \t"));
	}
	return bad(p, "unknown section [%s] (want [cowbd] or [export NAME])", name);
}

/* inih's reader: the next line, leading blanks stripped, counted.  A
 * section line is taken here; inih parses it again only to know that no
 * key = value follows on it.  NULL at the end, or to stop after an error. */
static char *config_read_line(char *str, int num, void *stream)
{
	struct parse *p = stream;
	ssize_t n;
	size_t len;
	char *s;

	if (p->err_line)
		return NULL;
	n = getline(&p->buf, &p->cap, p->f);
	if (n < 0) {
		if (ferror(p->f))
			bad(p, "read error");
		return NULL;
	}
	p->line++;
	if (memchr(p->buf, '\0', (size_t)n)) {
		bad(p, "NUL byte in the line");
		return NULL;
	}
	s = p->buf;
	if (p->line == 1 && !strncmp(s, "\xEF\xBB\xBF", 3))
		s += 3; /* a UTF-8 byte order mark */
	s += strspn(s, " \t");
	len = strcspn(s, "\r\n");
	s[len] = '\0';
	if (len + 2 > (size_t)num) {
		bad(p, "line longer than %d bytes", num - 2);
		return NULL;
	}
	if (*s == '[') {
		if (!section_line(p, s))
			return NULL;
		strcpy(str, "[]\n"); /* taken: inih needs no more of it */
		return str;
	}
	memcpy(str, s, len);
	str[len] = '\n';
	str[len + 1] = '\0';
	return str;
}

static bool repeatable(const struct config_schema *sc, const char *key)
{
	for (const char *const *r = sc->repeatable; r && *r; r++)
		if (!strcmp(*r, key))
			return true;
	return false;
}

/* key = value in [cowbd]: to the caller's schema. */
static int cowbd_key(struct parse *p, const char *key, const char *value)
{
	struct config *cfg = p->cfg;
	char why[CONFIG_ERR_MAX / 2], **strs, *v;
	struct seen_key *seen;
	int err;

	if (!repeatable(p->schema, key)) {
		for (size_t i = 0; i < p->nseen; i++)
			if (!strcmp(p->seen[i].name, key))
				return bad(p, "duplicate key '%s' (first at line %u)", key,
				           p->seen[i].line);
		seen = realloc(p->seen, (p->nseen + 1) * sizeof(*seen));
		if (!seen || !(seen[p->nseen].name = strdup(key))) {
			if (seen)
				p->seen = seen;
			return bad(p, "out of memory");
		}
		p->seen = seen;
		seen[p->nseen++].line = p->line;
	}
	strs = realloc(cfg->strs, (cfg->nstrs + 1) * sizeof(*strs));
	if (!strs)
		return bad(p, "out of memory");
	cfg->strs = strs;
	if (!(v = strs[cfg->nstrs] = strdup(value)))
		return bad(p, "out of memory");
	cfg->nstrs++;
	why[0] = '\0';
	err = p->schema->set(p->schema->arg, key, v, why, sizeof(why));
	if (err == -ENOENT)
		return bad(p, "unknown key '%s' in [cowbd]", key);
	if (err)
		return bad(p, "bad %s: %s", key, why[0] ? why : strerror(-err));
	return 1;
}

/* allow = CIDR, CIDR... (or "none"): append to e's networks. */
static int export_allow(struct parse *p, struct config_export *e, const char *value)
{
	char *list = strdup(value), *rest = list, *tok, why[160];
	struct config_cidr *a;
	int ok = 1;

	if (!list)
		return bad(p, "out of memory");
	e->has_allow = true;
	if (!strcmp(value, "none"))
		goto out;
	while (ok && (tok = strsep(&rest, ","))) {
		char *end;

		tok += strspn(tok, " \t");
		for (end = tok + strlen(tok); end > tok && (end[-1] == ' ' || end[-1] == '\t');)
			*--end = '\0';
		if (!*tok) {
			ok = bad(p, "bad allow: an empty entry in '%s'", value);
			break;
		}
		a = realloc(e->allow, (e->nallow + 1) * sizeof(*a));
		if (!a) {
			ok = bad(p, "out of memory");
			break;
		}
		e->allow = a;
		if (!strcmp(tok, "none"))
			ok = bad(p, "bad allow: 'none' must be the only entry");
		else if (config_cidr_parse(tok, &a[e->nallow], why, sizeof(why)))
			ok = bad(p, "bad allow: %s", why);
		else
			e->nallow++;
	}
out:
	free(list);
	return ok;
}

/* key = value in [export NAME]. */
static int export_key(struct parse *p, const char *key, const char *value)
{
	struct config_export *e = cur_export(p);
	unsigned *line = NULL;
	bool *flag = NULL;
	char **ids;

	if (!strcmp(key, "allow"))
		return export_allow(p, e, value);
	if (!strcmp(key, "tls-identity")) {
		ids = realloc(e->ids, (e->nids + 1) * sizeof(*ids));
		if (!ids)
			return bad(p, "out of memory");
		e->ids = ids;
		if (!(ids[e->nids] = strdup(value)))
			return bad(p, "out of memory");
		e->nids++;
		return 1;
	}
	if (!strcmp(key, "allow-unix"))
		line = &e->allow_unix_line, flag = &e->allow_unix;
	else if (!strcmp(key, "read-only"))
		line = &e->read_only_line, flag = &e->read_only;
	else
		return bad(p,
		           "unknown key '%s' in [export %s] (want allow, allow-unix, read-only or "
		           "tls-identity)",
		           key, e->name);
	if (*line)
		return bad(p, "duplicate key '%s' (first at line %u)", key, *line);
	*line = p->line;
	if (config_parse_bool(value, flag))
		return bad(p, "bad %s: '%s' (want yes or no)", key, value);
	return 1;
}

/* inih's handler: one key = value line. */
static int config_on_key(void *user, const char *section, const char *key, const char *value)
{
	struct parse *p = user;

	if (p->err_line)
		return 1; /* only the first problem is told */
	if (!*value)
		return bad(p, "'%s' has no value", key);
	switch (p->sec) {
	case SEC_COWBD:
		return cowbd_key(p, key, value);
	case SEC_EXPORT:
		return export_key(p, key, value);
	default:
		return bad(p, "'%s' is outside any section (put it under [cowbd] or [export NAME])",
		           key);
	}
}

/* Defaults that depend on the whole section. */
static void config_finish(struct config *cfg)
{
	for (size_t i = 0; i < cfg->nexports; i++) {
		struct config_export *e = &cfg->exports[i];

		if (!e->allow_unix_line)
			e->allow_unix = !e->has_allow;
	}
}

struct config *config_load(const char *path, const struct config_schema *schema, char *err,
                           size_t errlen)
{
	struct parse p = {.schema = schema, .err = err, .errlen = errlen};
	int line, e;

	p.cfg = calloc(1, sizeof(*p.cfg));
	if (!p.cfg || !(p.cfg->path = strdup(path))) {
		free(p.cfg);
		snprintf(err, errlen, "out of memory");
		errno = ENOMEM;
		return NULL;
	}
	p.f = fopen(path, "re");
	if (!p.f) {
		e = errno;
		snprintf(err, errlen, "cannot read %s: %s", path, strerror(e));
		config_free(p.cfg);
		errno = e;
		return NULL;
	}
	line = ini_parse_stream(config_read_line, &p, config_on_key, &p);
	fclose(p.f);
	free(p.buf);
	for (size_t i = 0; i < p.nseen; i++)
		free(p.seen[i].name);
	free(p.seen);
	if (line > 0 && (!p.err_line || (unsigned)line < p.err_line)) {
		snprintf(err, errlen,
		         "%s:%d: syntax error (want 'key = value', '[cowbd]' or "
		         "'[export NAME]')",
		         path, line);
		p.err_line = (unsigned)line;
	}
	if (p.err_line || line) {
		if (!p.err_line)
			snprintf(err, errlen, "%s: %s", path,
			         line < 0 ? "cannot read it" : "out of memory");
		config_free(p.cfg);
		errno = EINVAL;
		return NULL;
	}
	config_finish(p.cfg);
	return p.cfg;
}

const char *config_path(const struct config *cfg)
{
	return cfg->path;
}

/* ---- access rules ------------------------------------------------------ */

const struct config_export *config_export_find(const struct config *cfg, const char *name)
{
	char vol[NAMES_PART_MAX + 1];

	if (!cfg)
		return NULL;
	for (size_t i = 0; i < cfg->nexports; i++)
		if (!strcmp(cfg->exports[i].name, name))
			return &cfg->exports[i];
	if (!strchr(name, '@') || names_split(name, vol, NULL))
		return NULL;
	for (size_t i = 0; i < cfg->nexports; i++)
		if (!strcmp(cfg->exports[i].name, vol))
			return &cfg->exports[i];
	return NULL;
}

const struct config_export *config_export_at(const struct config *cfg, size_t i)
{
	return cfg && i < cfg->nexports ? &cfg->exports[i] : NULL;
}

const char *config_export_denies(const struct config_export *e, const struct sockaddr *peer,
                                 const char *tls_id)
{
	size_t i;

	if (!e)
		return NULL;
	if (peer->sa_family == AF_UNIX) {
		if (!e->allow_unix)
			return "unix socket clients are not allowed";
	} else if (e->has_allow) {
		for (i = 0; i < e->nallow && !config_cidr_match(&e->allow[i], peer); i++)
			;
		if (i == e->nallow)
			return "address not allowed";
	}
	if (!e->nids)
		return NULL;
	if (!tls_id)
		return "a TLS identity is required";
	for (i = 0; i < e->nids; i++)
		if (!strcmp(e->ids[i], tls_id))
			return NULL;
	return "TLS identity not allowed";
}

void config_free(struct config *cfg)
{
	if (!cfg)
		return;
	for (size_t i = 0; i < cfg->nexports; i++) {
		free(cfg->exports[i].allow);
		for (size_t j = 0; j < cfg->exports[i].nids; j++)
			free(cfg->exports[i].ids[j]);
		free(cfg->exports[i].ids);
	}
	free(cfg->exports);
	for (size_t i = 0; i < cfg->nstrs; i++)
		free(cfg->strs[i]);
	free(cfg->strs);
	free(cfg->path);
	free(cfg);
}
