/* control.c — the daemon's control socket: newline-delimited JSON requests
 * (volume.create, snapshot.create, clone, ...) turned into synchronous
 * store_* control calls, and their results or errors turned back into JSON.
 * docs/CONTROL.md is the protocol's reference; keep the two in step.
 *
 * Layer: beside conn, above store.  It never touches the data path.
 *
 * Threads and locks: one accept thread polls the listening socket and a
 * stop pipe.  Each accepted client gets a detached thread that reads
 * requests (at most CONTROL_MAX_REQ bytes each, CONTROL_IDLE_SECS idle
 * timeout) and answers them in order; at CONTROL_MAX_CLIENTS the accept
 * thread stops accepting until one finishes.  c->lock guards the client
 * list and count; control_stop() shuts every client socket down and waits
 * on c->idle until the count reaches zero.  c->op_lock serialises the store
 * calls themselves: control operations are rare, and running them one at a
 * time keeps their outcome and the order of their log lines obvious.
 * Every control thread blocks all signals, so the daemon's signal
 * handling stays on its own threads.
 *
 * The socket is bound under a temporary name, chmod'ed to 0600 before it
 * listens, then renamed over the final path: nobody else can ever connect
 * to a socket with a wider mode, and a stale socket from a dead daemon is
 * replaced atomically.  A socket on which someone still answers is never
 * replaced.  Under socket activation the service manager made the socket
 * (control_start_fd): it is served as passed and its file left alone.
 */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "control.h"
#include "diff.h"
#include "names.h"
#include "say.h"
#include "sockets.h"
#include "store.h"
#include "version.h"

#define CONTROL_MAX_REQ     (64u << 10) /* longest request line, bytes */
#define CONTROL_MAX_CLIENTS 16          /* more wait in the listen backlog */
#define CONTROL_IDLE_SECS   30          /* a silent or non-reading client is dropped */
#define CONTROL_MSG_MAX     768         /* error message buffer */
#define CONTROL_PAGE_SIZE   1000u       /* list entries per page when "limit" is absent */

struct control_client {
	struct control *c;
	int fd;
	bool busy;                          /* answering a request (under c->lock) */
	struct control_client *prev, *next; /* c->clients, under c->lock */
};

struct control {
	struct store *st;
	char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	struct sockets_unix sock; /* listening; stop unlinks only our own file */
	int stop_pipe[2];
	pthread_t accept_thread;

	pthread_mutex_t lock; /* guards clients, nclients, stopping */
	pthread_cond_t idle;  /* signalled when nclients drops or stopping is set */
	struct control_client *clients;
	unsigned nclients;
	bool stopping;

	pthread_mutex_t op_lock; /* held across each request's store calls */

	control_clients_fn clients_fn; /* under lock: the `clients` op's source */
	void *clients_arg;
	control_upgrade_fn upgrade_fn; /* under lock: the `upgrade` op's worker */
	void *upgrade_arg;
	bool handed_off;  /* the listening socket is someone else's (under lock) */
	bool accept_stop; /* the accept thread ends (under lock) */
};

/* One request being answered: the op's handler reads req and fills res;
 * on failure it returns -errno and may write a message into msg. */
struct control_ctx {
	struct control *c;
	json_t *req;
	json_t *res;
	char msg[CONTROL_MSG_MAX];
};

/* ---- helpers -------------------------------------------------------- */

static const char *control_errno_name(int err)
{
	const char *n = strerrorname_np(err);

	return n ? n : "EUNKNOWN";
}

static void control_set_msg(struct control_ctx *x, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void control_set_msg(struct control_ctx *x, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(x->msg, sizeof(x->msg), fmt, ap);
	va_end(ap);
}

/* Fetch the string field key of the request as a name of the given kind
 * (names.h).  Returns 0 or -EINVAL with the message set. */
static int control_get_name(struct control_ctx *x, const char *key, enum names_kind kind,
                            const char **out)
{
	json_t *j = json_object_get(x->req, key);
	const char *what;

	if (!json_is_string(j)) {
		what = kind == NAMES_VOLUME     ? "a volume name"
		       : kind == NAMES_SNAPSHOT ? "a VOL@SNAP snapshot name"
		                                : "a name";
		control_set_msg(x, "%s needs \"%s\" (%s)",
		                json_string_value(json_object_get(x->req, "op")), key, what);
		return -EINVAL;
	}
	if (names_check(json_string_value(j), kind, x->msg, sizeof(x->msg)) < 0)
		return -EINVAL;
	*out = json_string_value(j);
	return 0;
}

static json_t *control_info_json(const struct store_vol_info *vi)
{
	json_t *o = json_object();
	char vol[NAMES_PART_MAX + 1];

	json_object_set_new(o, "name", json_string(vi->name));
	json_object_set_new(o, "id", json_integer((json_int_t)vi->id));
	json_object_set_new(o, "snapshot", json_boolean(vi->snapshot));
	if (vi->snapshot && names_split(vi->name, vol, NULL) == 0)
		json_object_set_new(o, "volume", json_string(vol));
	json_object_set_new(o, "size", json_integer((json_int_t)vi->size));
	json_object_set_new(o, "used",
	                    json_integer((json_int_t)(vi->mapped_blocks * STORE_BLOCK_SIZE)));
	json_object_set_new(o, "unique",
	                    json_integer((json_int_t)(vi->unique_blocks * STORE_BLOCK_SIZE)));
	json_object_set_new(o, "origin", vi->origin[0] ? json_string(vi->origin) : json_null());
	json_object_set_new(o, "created", json_integer((json_int_t)vi->created));
	json_object_set_new(o, "attached", json_integer(vi->attached));
	return o;
}

/* Does list entry e belong to volume vol as one of its snapshots? */
/* The store operation behind a control op's name (for store_explain). */
static enum store_ctl_op control_store_op(const char *op)
{
	static const struct {
		const char *name;
		enum store_ctl_op op;
	} map[] = {
	    {"volume.create", STORE_OP_VOL_CREATE},
	    {"volume.delete", STORE_OP_VOL_DELETE},
	    {"snapshot.create", STORE_OP_SNAP_CREATE},
	    {"snapshot.delete", STORE_OP_SNAP_DELETE},
	    {"clone", STORE_OP_CLONE},
	    {"rollback", STORE_OP_ROLLBACK},
	    {"volume.resize", STORE_OP_VOL_RESIZE},
	    {"volume.rename", STORE_OP_VOL_RENAME},
	};
	for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++)
		if (!strcmp(map[i].name, op))
			return map[i].op;
	return STORE_OP_LOOKUP;
}

static const char *control_kind(const char *name)
{
	return strchr(name, '@') ? "snapshot" : "volume";
}

/* Explain a store error for the op on name (and, for clone, new_vol) in
 * words an operator can act on: the store says why (store_explain), this
 * says it in English. */
static void control_explain(struct control_ctx *x, const char *op, const char *name,
                            const char *new_vol, int err)
{
	struct store_why w;
	const char *subj = w.subject;
	char list[4 * (NAMES_FULL_MAX + 2)] = "";

	store_explain(x->c->st, control_store_op(op), name, new_vol, err, &w);
	switch (w.code) {
	case STORE_WHY_EXISTS:
		control_set_msg(x, "%s \"%s\" exists", control_kind(subj), subj);
		return;
	case STORE_WHY_NO_VOLUME:
		control_set_msg(x, "no volume \"%s\"", subj);
		return;
	case STORE_WHY_NO_SNAPSHOT:
		control_set_msg(x, "no snapshot \"%s\"", subj);
		return;
	case STORE_WHY_POOL_FULL:
		control_set_msg(x, "%s %s: pool is full", op, name);
		return;
	case STORE_WHY_POOL_FAILED:
		control_set_msg(
		    x, "%s %s: I/O error on the pool (writes fail until cowbd restarts)", op, name);
		return;
	case STORE_WHY_READ_ONLY:
		control_set_msg(x, "%s %s: pool is open read-only", op, name);
		return;
	case STORE_WHY_ATTACHED:
		control_set_msg(x, "%s \"%s\" is attached (%u open handle%s)", control_kind(subj),
		                subj, w.count, w.count == 1 ? "" : "s");
		return;
	case STORE_WHY_HAS_SNAPSHOTS:
		control_set_msg(x, "volume \"%s\" has %u snapshot%s; delete %s first", subj,
		                w.count, w.count == 1 ? "" : "s", w.count == 1 ? "it" : "them");
		return;
	case STORE_WHY_HAS_CLONES:
		for (unsigned i = 0; i < w.count && i < STORE_WHY_NAMES; i++) {
			size_t used = strlen(list);
			snprintf(list + used, sizeof(list) - used, "%s%s", i ? ", " : "",
			         w.names[i]);
		}
		if (w.count > STORE_WHY_NAMES)
			strcat(list, ", ...");
		control_set_msg(x, "snapshot \"%s\" is the origin of clone%s %s; delete %s first",
		                subj, w.count == 1 ? "" : "s", list, w.count == 1 ? "it" : "them");
		return;
	case STORE_WHY_BUSY:
		control_set_msg(x, "%s %s: %s is busy", op, name, control_kind(name));
		return;
	case STORE_WHY_SHRINK:
	case STORE_WHY_RANGE:
	case STORE_WHY_UNALIGNED: /* control_explain_resize's */
		break;
	case STORE_WHY_OTHER:
		break;
	}
	control_set_msg(x, "%s %s: %s", op, name, strerror(-err));
}

/* Human size for messages: "512 B", "64 MiB", "1.5 GiB" (exact bytes are
 * in the JSON). */
static const char *control_human(uint64_t v, char *buf, size_t len)
{
	static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
	double d = (double)v;
	int u = 0;

	while (d >= 1024 && u < 6) {
		d /= 1024;
		u++;
	}
	if (u == 0 || d == (double)(uint64_t)d)
		snprintf(buf, len, "%.0f %s", d, units[u]);
	else
		snprintf(buf, len, "%.1f %s", d, units[u]);
	return buf;
}

/* A refused resize of name to size, in words: the resize rules first,
 * then whatever control_explain says. */
static void control_explain_resize(struct control_ctx *x, const char *name, uint64_t size, int err)
{
	struct store_why w;
	char a[32], b[32], lo[32], hi[32];

	store_explain_resize(x->c->st, name, size, err, &w);
	control_human(size, a, sizeof(a));
	control_human(w.size, b, sizeof(b));
	control_human(w.lo, lo, sizeof(lo));
	control_human(w.hi, hi, sizeof(hi));
	switch (w.code) {
	case STORE_WHY_SHRINK:
		control_set_msg(x,
		                "volume.resize %s: %s is smaller than its size %s; shrinking "
		                "discards the data past the new end and must be asked for "
		                "(cowctl volume resize --shrink, the volume detached)",
		                name, a, b);
		return;
	case STORE_WHY_RANGE:
		control_set_msg(x,
		                "volume.resize %s: %s is outside %s..%s, the sizes a %s volume can "
		                "take in place (its block tree's depth is fixed)",
		                name, a, lo, hi, b);
		return;
	case STORE_WHY_UNALIGNED:
		control_set_msg(x,
		                "volume.resize %s: a shrink must be to a multiple of %u bytes, not "
		                "%llu",
		                name, STORE_BLOCK_SIZE, (unsigned long long)size);
		return;
	default:
		control_explain(x, "volume.resize", name, NULL, err);
	}
}

/* Put the store's record of name into res[key]. */
static int control_put_info(struct control_ctx *x, const char *key, const char *name)
{
	struct store_vol_info vi;
	int r = store_info(x->c->st, name, &vi);

	if (r < 0)
		return r;
	json_object_set_new(x->res, key, control_info_json(&vi));
	return 0;
}

/* ---- ops -------------------------------------------------------------- */

static int control_op_volume_create(struct control_ctx *x)
{
	json_t *js = json_object_get(x->req, "size");
	const char *name;
	json_int_t size;
	int r;

	if ((r = control_get_name(x, "name", NAMES_VOLUME, &name)) < 0)
		return r;
	if (!json_is_integer(js)) {
		control_set_msg(x, "volume.create needs \"size\" (bytes, an integer)");
		return -EINVAL;
	}
	size = json_integer_value(js);
	if (size <= 0 || size % 512) {
		control_set_msg(
		    x, "invalid size %lld for volume \"%s\" (a positive multiple of 512 bytes)",
		    (long long)size, name);
		return -EINVAL;
	}
	r = store_vol_create(x->c->st, name, (uint64_t)size);
	if (r == -EINVAL) {
		control_set_msg(x, "volume.create %s: the store refused size %lld", name,
		                (long long)size);
		return r;
	}
	if (r < 0) {
		control_explain(x, "volume.create", name, NULL, r);
		return r;
	}
	say_info("control: created volume %s (%lld bytes)", name, (long long)size);
	control_put_info(x, "volume", name);
	return 0;
}

/* The list as JSON: volumes (snapshots false) or snapshots (true, only of
 * volume vol unless NULL).  Each volume carries its snapshots' names. */
/* Is e a snapshot of volume vol? */
static bool control_is_snap_of(const struct store_vol_info *e, const char *vol)
{
	size_t n = strlen(vol);

	return e->snapshot && strncmp(e->name, vol, n) == 0 && e->name[n] == '@';
}

static int control_list(struct control_ctx *x, bool snapshots, const char *vol, const char *key)
{
	struct store_vol_info *all;
	size_t n, i, k;
	json_t *arr, *o, *names;
	int r = store_list(x->c->st, &all, &n);

	if (r < 0) {
		control_set_msg(x, "cannot list volumes: %s", strerror(-r));
		return r;
	}
	arr = json_array();
	for (i = 0; i < n; i++) {
		if (all[i].snapshot != snapshots)
			continue;
		if (vol && !control_is_snap_of(&all[i], vol))
			continue;
		o = control_info_json(&all[i]);
		if (!snapshots) {
			names = json_array();
			for (k = 0; k < n; k++)
				if (control_is_snap_of(&all[k], all[i].name))
					json_array_append_new(names, json_string(all[k].name));
			json_object_set_new(o, "snapshots", names);
		}
		json_array_append_new(arr, o);
	}
	free(all);
	json_object_set_new(x->res, key, arr);
	return 0;
}

/* A list request's paging fields: "after" (the id the previous page ended
 * with; absent, null or 0: from the start), "limit" (entries per page) and
 * "figures" (true: "unique" too, a tree walk per entry).
 * Returns 1 when the request pages (it has "after" or "limit"), 0 for a
 * request in the old form, or -EINVAL with the message set. */
static int control_page_args(struct control_ctx *x, struct store_list_req *q)
{
	const char *op = json_string_value(json_object_get(x->req, "op"));
	json_t *ja = json_object_get(x->req, "after"), *jl = json_object_get(x->req, "limit");
	json_t *jf = json_object_get(x->req, "figures");

	ja = json_is_null(ja) ? NULL : ja; /* null: absent, as for "volume" */
	jl = json_is_null(jl) ? NULL : jl;
	jf = json_is_null(jf) ? NULL : jf;
	if (jf && !json_is_boolean(jf)) {
		control_set_msg(x, "%s: \"figures\" is true or false", op);
		return -EINVAL;
	}
	if (ja && (!json_is_integer(ja) || json_integer_value(ja) < 0 ||
	           json_integer_value(ja) > UINT32_MAX)) {
		control_set_msg(x,
		                "%s: \"after\" is the id the previous page ended with (its "
		                "\"next\"), an integer from 0 to %u",
		                op, UINT32_MAX);
		return -EINVAL;
	}
	if (jl && (!json_is_integer(jl) || json_integer_value(jl) < 1 ||
	           json_integer_value(jl) > STORE_LIST_PAGE_MAX)) {
		control_set_msg(x, "%s: \"limit\" is entries per page, an integer from 1 to %u", op,
		                STORE_LIST_PAGE_MAX);
		return -EINVAL;
	}
	q->after = ja ? (uint64_t)json_integer_value(ja) : 0;
	q->max = jl ? (unsigned)json_integer_value(jl) : CONTROL_PAGE_SIZE;
	q->flags = json_is_true(jf) ? STORE_LIST_FIGURES : 0;
	return ja || jl;
}

/* One page of q's listing into res[key], and "next": the id to ask for
 * the following page "after", or null after the last. */
static int control_list_paged(struct control_ctx *x, const struct store_list_req *q,
                              const char *key)
{
	const char *op = json_string_value(json_object_get(x->req, "op"));
	struct store_vol_info *e = calloc(q->max, sizeof(*e));
	size_t n, i;
	bool more;
	json_t *arr;
	int r;

	if (!e)
		return -ENOMEM;
	r = store_list_page(x->c->st, q, e, &n, &more);
	if (r < 0) {
		free(e);
		if (q->volume)
			control_explain(x, op, q->volume, NULL, r);
		return r;
	}
	arr = json_array();
	for (i = 0; i < n; i++) {
		json_t *o = control_info_json(&e[i]);

		if (!(q->flags & STORE_LIST_FIGURES))
			json_object_del(o, "unique");
		if (!q->snapshots)
			json_object_set_new(o, "snapshot_count", json_integer(e[i].nsnapshots));
		json_array_append_new(arr, o);
	}
	json_object_set_new(x->res, key, arr);
	json_object_set_new(x->res, "next",
	                    more && n ? json_integer((json_int_t)e[n - 1].id) : json_null());
	free(e);
	return 0;
}

/* Call fn for every entry q lists (q->max at a time, without figures),
 * never the whole table in memory.  0 or -errno. */
static int control_each(struct control *c, struct store_list_req *q,
                        void (*fn)(void *arg, const struct store_vol_info *e), void *arg)
{
	struct store_vol_info *e = calloc(q->max, sizeof(*e));
	bool more = true;
	size_t n;
	int r = e ? 0 : -ENOMEM;

	while (!r && more) {
		r = store_list_page(c->st, q, e, &n, &more);
		for (size_t i = 0; !r && i < n; i++)
			fn(arg, &e[i]);
		if (!r && n)
			q->after = e[n - 1].id;
	}
	free(e);
	return r;
}

static int control_op_volume_list(struct control_ctx *x)
{
	struct store_list_req q = {.snapshots = false};
	int r = control_page_args(x, &q);

	if (r < 0)
		return r;
	return r ? control_list_paged(x, &q, "volumes") : control_list(x, false, NULL, "volumes");
}

static int control_op_volume_delete(struct control_ctx *x)
{
	const char *name;
	int r;

	if ((r = control_get_name(x, "name", NAMES_VOLUME, &name)) < 0)
		return r;
	r = store_vol_delete(x->c->st, name);
	if (r < 0) {
		control_explain(x, "volume.delete", name, NULL, r);
		return r;
	}
	say_info("control: deleted volume %s", name);
	return 0;
}

/* volume.info's names: every entry listed, or only clones of origin. */
struct control_names {
	json_t *arr;
	const char *origin;
};

static void control_names_add(void *arg, const struct store_vol_info *e)
{
	struct control_names *nm = arg;

	if (!nm->origin || !strcmp(e->origin, nm->origin))
		json_array_append_new(nm->arr, json_string(e->name));
}

static int control_op_volume_info(struct control_ctx *x)
{
	struct store_vol_info vi;
	const char *name;
	json_t *o;
	int r;

	if ((r = control_get_name(x, "name", NAMES_ANY, &name)) < 0)
		return r;
	r = store_info(x->c->st, name, &vi);
	if (r < 0) {
		control_explain(x, "volume.info", name, NULL, r);
		return r;
	}
	o = control_info_json(&vi);
	struct control_names names = {.arr = json_array(), .origin = vi.name};
	struct store_list_req q = {.max = CONTROL_PAGE_SIZE};
	if (vi.snapshot) { /* its clones */
		control_each(x->c, &q, control_names_add, &names);
		json_object_set_new(o, "clones", names.arr);
	} else { /* its snapshots */
		q.snapshots = true;
		q.volume = vi.name;
		names.origin = NULL;
		control_each(x->c, &q, control_names_add, &names);
		json_object_set_new(o, "snapshots", names.arr);
	}
	json_object_set_new(x->res, "volume", o);
	return 0;
}

static int control_op_snapshot_create(struct control_ctx *x)
{
	const char *name;
	int r;

	if ((r = control_get_name(x, "name", NAMES_SNAPSHOT, &name)) < 0)
		return r;
	r = store_snap_create(x->c->st, name);
	if (r < 0) {
		control_explain(x, "snapshot.create", name, NULL, r);
		return r;
	}
	say_info("control: created snapshot %s", name);
	control_put_info(x, "snapshot", name);
	return 0;
}

static int control_op_snapshot_list(struct control_ctx *x)
{
	struct store_list_req q = {.snapshots = true};
	struct store_vol_info vi;
	const char *vol = NULL;
	int r;

	if (json_object_get(x->req, "volume") && !json_is_null(json_object_get(x->req, "volume")) &&
	    (r = control_get_name(x, "volume", NAMES_VOLUME, &vol)) < 0)
		return r;
	if ((r = control_page_args(x, &q)) < 0)
		return r;
	if (r) {
		q.volume = vol;
		return control_list_paged(x, &q, "snapshots");
	}
	if (vol) {
		r = store_info(x->c->st, vol, &vi);
		if (r < 0) {
			control_explain(x, "snapshot.list", vol, NULL, r);
			return r;
		}
	}
	return control_list(x, true, vol, "snapshots");
}

/* Policy kept here rather than in the store: a snapshot that is the origin
 * of a clone is not deleted (the store could, and would leave the clone's
 * origin "(deleted)"), so an operator never loses track of where a clone
 * came from by accident.  Control ops are serialised by op_lock, so no
 * clone can appear between this check and the delete. */
static int control_op_snapshot_delete(struct control_ctx *x)
{
	const char *name;
	int r;

	if ((r = control_get_name(x, "name", NAMES_SNAPSHOT, &name)) < 0)
		return r;
	r = store_snap_delete(x->c->st, name);
	if (r < 0) {
		control_explain(x, "snapshot.delete", name, NULL, r);
		return r;
	}
	say_info("control: deleted snapshot %s", name);
	return 0;
}

static int control_op_clone(struct control_ctx *x)
{
	const char *snap, *name;
	int r;

	if ((r = control_get_name(x, "snapshot", NAMES_SNAPSHOT, &snap)) < 0 ||
	    (r = control_get_name(x, "name", NAMES_VOLUME, &name)) < 0)
		return r;
	r = store_clone(x->c->st, snap, name);
	if (r < 0) {
		control_explain(x, "clone", snap, name, r);
		return r;
	}
	say_info("control: cloned %s from %s", name, snap);
	control_put_info(x, "volume", name);
	return 0;
}

static int control_op_rollback(struct control_ctx *x)
{
	const char *name;
	int r;

	if ((r = control_get_name(x, "name", NAMES_SNAPSHOT, &name)) < 0)
		return r;
	r = store_rollback(x->c->st, name);
	if (r < 0) {
		control_explain(x, "rollback", name, NULL, r);
		return r;
	}
	say_info("control: rolled back to %s", name);
	return 0;
}

/* volume.resize: "size" in bytes; "shrink": true to allow a smaller one. */
static int control_op_volume_resize(struct control_ctx *x)
{
	json_t *js = json_object_get(x->req, "size"), *jshrink = json_object_get(x->req, "shrink");
	struct store_vol_info vi;
	const char *name;
	json_int_t size;
	int r;

	if ((r = control_get_name(x, "name", NAMES_VOLUME, &name)) < 0)
		return r;
	if (!json_is_integer(js)) {
		control_set_msg(x, "volume.resize needs \"size\" (bytes, an integer)");
		return -EINVAL;
	}
	if (jshrink && !json_is_boolean(jshrink)) {
		control_set_msg(x, "volume.resize: \"shrink\" is true or false");
		return -EINVAL;
	}
	size = json_integer_value(js);
	if (size <= 0 || size % 512) {
		control_set_msg(
		    x, "invalid size %lld for volume \"%s\" (a positive multiple of 512 bytes)",
		    (long long)size, name);
		return -EINVAL;
	}
	r = store_info(x->c->st, name, &vi);
	if (!r)
		r = store_vol_resize(x->c->st, name, (uint64_t)size,
		                     json_is_true(jshrink) ? STORE_RESIZE_SHRINK : 0);
	if (r < 0) {
		control_explain_resize(x, name, (uint64_t)size, r);
		return r;
	}
	if (vi.size != (uint64_t)size)
		say_info("control: resized volume %s from %llu to %lld bytes", name,
		         (unsigned long long)vi.size, (long long)size);
	json_object_set_new(x->res, "previous_size", json_integer((json_int_t)vi.size));
	control_put_info(x, "volume", name);
	return 0;
}

static int control_op_volume_rename(struct control_ctx *x)
{
	const char *name, *new_name;
	int r;

	if ((r = control_get_name(x, "name", NAMES_VOLUME, &name)) < 0 ||
	    (r = control_get_name(x, "new_name", NAMES_VOLUME, &new_name)) < 0)
		return r;
	r = store_vol_rename(x->c->st, name, new_name);
	if (r < 0) {
		control_explain(x, "volume.rename", name, new_name, r);
		return r;
	}
	say_info("control: renamed volume %s to %s", name, new_name);
	control_put_info(x, "volume", new_name);
	return 0;
}

static int control_op_stats(struct control_ctx *x)
{
	struct store_stats s;
	json_t *o = json_object();

	store_get_stats(x->c->st, &s);
#define STAT(f) json_object_set_new(o, #f, json_integer((json_int_t)s.f))
	STAT(pool_bytes);
	STAT(segment_bytes);
	STAT(segments);
	STAT(segments_free);
	STAT(segments_pending);
	STAT(blocks_live);
	STAT(log_lsn);
	STAT(checkpoint_lsn);
	STAT(batches);
	STAT(batch_blocks);
	STAT(summary_rewrites);
	STAT(inline_rounds);
	STAT(inline_slow);
	STAT(syncs);
	STAT(checkpoints);
	STAT(compactions);
	STAT(compacted_blocks);
	STAT(segments_freed);
	STAT(bad_blocks);
	STAT(bad_reads);
	STAT(read_views);
	STAT(compact_skipped_bad);
	STAT(cache_nodes);
	STAT(cache_bytes);
	STAT(cache_bound);
	STAT(cache_loads);
	STAT(cache_evictions);
	STAT(flushes);
	STAT(fua_requests);
	STAT(bytes_written);
	STAT(client_write_bytes);
	STAT(compact_ns);
	STAT(checkpoint_ns);
	STAT(ckpt_log_ns);
	STAT(ckpt_sync_ns);
	STAT(ckpt_log_max_ns);
	STAT(ckpt_precopy_nodes);
	STAT(ckpt_precopy_pages);
#undef STAT
	json_object_set_new(o, "block_size", json_integer(STORE_BLOCK_SIZE));
	json_object_set_new(o, "failed", json_boolean(s.failed));
	json_object_set_new(o, "read_only", json_boolean(s.read_only));
	json_object_set_new(o, "read_only_fallback", json_boolean(s.read_only_fallback));
	json_object_set_new(x->res, "stats", o);
	return 0;
}

/* Bytes in segments in use (segment 0, the superblocks', aside) that hold
 * no live block: what compaction and the next checkpoint can give back
 * (the unwritten end of the log's head segment counts too). */
static uint64_t control_reclaimable(const struct store_stats *s)
{
	uint64_t used = s->segments - 1 - s->segments_free;
	uint64_t live = s->blocks_live * STORE_BLOCK_SIZE, inuse = used * s->segment_bytes;

	return inuse > live ? inuse - live : 0;
}

/* pool.status: the pool at a glance, from the store's counters and its
 * volume table. */
struct control_pool_count {
	uint64_t provisioned, volumes, snapshots;
};

static void control_pool_count_one(void *arg, const struct store_vol_info *e)
{
	struct control_pool_count *pc = arg;

	pc->provisioned += e->size;
	pc->volumes++;
	pc->snapshots += e->nsnapshots;
}

static int control_op_pool_status(struct control_ctx *x)
{
	struct store_list_req q = {.max = CONTROL_PAGE_SIZE};
	struct control_pool_count pc = {0};
	struct store_stats s;
	json_t *o, *cp;
	int r = control_each(x->c, &q, control_pool_count_one, &pc);

	if (r < 0) {
		control_set_msg(x, "cannot list volumes: %s", strerror(-r));
		return r;
	}
	o = json_object();
	cp = json_object();
	store_get_stats(x->c->st, &s);
#define PUT(k, v) json_object_set_new(o, k, json_integer((json_int_t)(v)))
	PUT("size", s.pool_bytes);
	PUT("provisioned", pc.provisioned);
	json_object_set_new(
	    o, "overcommit",
	    json_real(s.pool_bytes ? (double)pc.provisioned / (double)s.pool_bytes : 0));
	PUT("allocated", (s.segments - s.segments_free) * s.segment_bytes);
	PUT("live", s.blocks_live * STORE_BLOCK_SIZE);
	PUT("reclaimable", control_reclaimable(&s));
	PUT("free", s.segments_free * s.segment_bytes);
	PUT("segment_size", s.segment_bytes);
	PUT("segments", s.segments);
	PUT("segments_free", s.segments_free);
	PUT("segments_pending", s.segments_pending);
	PUT("volumes", pc.volumes);
	PUT("snapshots", pc.snapshots);
	PUT("format_version", s.format_version);
	PUT("count_pages", s.count_pages);
	PUT("count_pages_evicted", s.count_pages_evicted);
#undef PUT
	json_object_set_new(cp, "passes", json_integer((json_int_t)s.compactions));
	json_object_set_new(cp, "blocks_moved", json_integer((json_int_t)s.compacted_blocks));
	json_object_set_new(cp, "segments_freed", json_integer((json_int_t)s.segments_freed));
	json_object_set_new(cp, "damaged_left", json_integer((json_int_t)s.compact_skipped_bad));
	json_object_set_new(o, "compactor", cp);
	json_object_set_new(o, "failed", json_boolean(s.failed));
	json_object_set_new(o, "read_only", json_boolean(s.read_only));
	json_object_set_new(o, "read_only_fallback", json_boolean(s.read_only_fallback));
	json_object_set_new(x->res, "pool", o);
	return 0;
}

/* volume.stats: per volume and snapshot (of "name" only, if given: a
 * volume brings its snapshots). */
static int control_op_volume_stats(struct control_ctx *x)
{
	struct store_vol_info *all;
	const char *name = NULL;
	json_t *arr, *o, *jn = json_object_get(x->req, "name");
	size_t n, i;
	int r;

	if (jn && !json_is_null(jn)) {
		struct store_vol_info vi;

		if ((r = control_get_name(x, "name", NAMES_ANY, &name)) < 0)
			return r;
		if ((r = store_info(x->c->st, name, &vi)) < 0) {
			control_explain(x, "volume.stats", name, NULL, r);
			return r;
		}
	}
	if ((r = store_list(x->c->st, &all, &n)) < 0) {
		control_set_msg(x, "cannot list volumes: %s", strerror(-r));
		return r;
	}
	arr = json_array();
	for (i = 0; i < n; i++) {
		if (name && strcmp(all[i].name, name) && !control_is_snap_of(&all[i], name))
			continue;
		o = json_object();
		json_object_set_new(o, "name", json_string(all[i].name));
		json_object_set_new(o, "snapshot", json_boolean(all[i].snapshot));
		json_object_set_new(o, "size", json_integer((json_int_t)all[i].size));
		json_object_set_new(o, "mapped_blocks",
		                    json_integer((json_int_t)all[i].mapped_blocks));
		json_object_set_new(o, "unique_blocks",
		                    json_integer((json_int_t)all[i].unique_blocks));
		json_object_set_new(
		    o, "used", json_integer((json_int_t)(all[i].mapped_blocks * STORE_BLOCK_SIZE)));
		json_object_set_new(
		    o, "unique",
		    json_integer((json_int_t)(all[i].unique_blocks * STORE_BLOCK_SIZE)));
		json_object_set_new(o, "attached", json_integer(all[i].attached));
		json_array_append_new(arr, o);
	}
	free(all);
	json_object_set_new(x->res, "block_size", json_integer(STORE_BLOCK_SIZE));
	json_object_set_new(x->res, "volumes", arr);
	return 0;
}

/* compact: one pass (store_compact); the reply says what it did and what
 * is left, so a client can repeat it while "blocks_moved" is not 0. */
/* diff: the extents store_diff reports, collected as JSON. */
struct control_diff {
	json_t *arr;
	uint64_t changed, zeroed;
};

static int control_diff_one(void *arg, const struct store_diff_extent *e)
{
	struct control_diff *d = arg;
	json_t *o = json_object();

	if (!o)
		return -ENOMEM;
	json_object_set_new(o, "offset", json_integer((json_int_t)e->off));
	json_object_set_new(o, "length", json_integer((json_int_t)e->len));
	json_object_set_new(o, "zero", json_boolean(e->zero));
	d->changed += e->len;
	d->zeroed += e->zero ? e->len : 0;
	return json_array_append_new(d->arr, o) ? -ENOMEM : 0;
}

/* Why store_diff refused (from, to), in words. */
static void control_diff_refused(struct control_ctx *x, const char *from, const char *to, int r)
{
	struct store_vol_info vi;
	const char *later = to ? to : from;

	if (r == -ENOENT)
		control_set_msg(x, "diff refused: no volume or snapshot \"%s\"",
		                store_info(x->c->st, from, &vi) < 0 ? from : later);
	else if (r == -EXDEV)
		control_set_msg(x,
		                "diff refused: \"%s\" and \"%s\" share no history (a volume, its "
		                "snapshots and the clones made from them, up their origins)",
		                from, later);
	else if (r == -EBUSY)
		control_set_msg(x, "diff refused: \"%s\" or \"%s\" is being deleted or rolled back",
		                from, later);
	else
		control_set_msg(x, "diff refused: %s", strerror(-r));
}

/* diff {from, to?}: what changed from `from` to `to` (default: from's
 * volume now), as merged, sorted extents {offset, length, zero}. */
static int control_op_diff(struct control_ctx *x)
{
	struct control_diff d = {.arr = json_array()};
	const char *from, *to = NULL;
	json_t *jt = json_object_get(x->req, "to");
	int r;

	if ((r = control_get_name(x, "from", NAMES_ANY, &from)) < 0)
		return r;
	if (jt && !json_is_null(jt) && (r = control_get_name(x, "to", NAMES_ANY, &to)) < 0)
		return r;
	if (!d.arr)
		return -ENOMEM;
	r = store_diff(x->c->st, from, to, control_diff_one, &d);
	if (r < 0) {
		json_decref(d.arr);
		control_diff_refused(x, from, to, r);
		return r;
	}
	json_object_set_new(x->res, "extents", d.arr);
	json_object_set_new(x->res, "changed_bytes", json_integer((json_int_t)d.changed));
	json_object_set_new(x->res, "zeroed_bytes", json_integer((json_int_t)d.zeroed));
	return 0;
}

static int control_op_compact(struct control_ctx *x)
{
	struct store_stats before, after;
	json_t *o;
	int64_t moved;

	store_get_stats(x->c->st, &before);
	moved = store_compact(x->c->st);
	if (moved < 0) {
		control_explain(x, "compact", "pool", NULL, (int)moved);
		return (int)moved;
	}
	store_get_stats(x->c->st, &after);
	o = json_object();
	json_object_set_new(o, "blocks_moved", json_integer((json_int_t)moved));
	json_object_set_new(
	    o, "segments_freed",
	    json_integer((json_int_t)(after.segments_freed - before.segments_freed)));
	json_object_set_new(o, "segments_free", json_integer((json_int_t)after.segments_free));
	json_object_set_new(o, "free",
	                    json_integer((json_int_t)(after.segments_free * after.segment_bytes)));
	json_object_set_new(o, "reclaimable",
	                    json_integer((json_int_t)control_reclaimable(&after)));
	json_object_set_new(x->res, "compact", o);
	return 0;
}

/* clients: the NBD server's connections, through the callback main.c
 * gives (control_set_clients_fn). */
static int control_op_clients(struct control_ctx *x)
{
	control_clients_fn fn;
	struct control_conn *cc;
	void *arg;
	size_t n, i;
	json_t *arr;
	int r;

	pthread_mutex_lock(&x->c->lock);
	fn = x->c->clients_fn;
	arg = x->c->clients_arg;
	pthread_mutex_unlock(&x->c->lock);
	if (!fn) {
		control_set_msg(x, "clients: this cowbd does not list its connections");
		return -EOPNOTSUPP;
	}
	if ((r = fn(arg, &cc, &n)) < 0) {
		control_set_msg(x, "clients: %s", strerror(-r));
		return r;
	}
	arr = json_array();
	for (i = 0; i < n; i++) {
		json_t *o = json_object();

		json_object_set_new(o, "peer", json_string(cc[i].peer));
		json_object_set_new(o, "export",
		                    cc[i].export[0] ? json_string(cc[i].export) : json_null());
		json_object_set_new(o, "since", json_integer((json_int_t)cc[i].since));
		json_object_set_new(o, "tls", json_boolean(cc[i].tls));
		json_object_set_new(o, "bytes_read", json_integer((json_int_t)cc[i].bytes_read));
		json_object_set_new(o, "bytes_written",
		                    json_integer((json_int_t)cc[i].bytes_written));
		json_object_set_new(o, "loop", json_integer((json_int_t)cc[i].loop));
		json_array_append_new(arr, o);
	}
	free(cc);
	json_object_set_new(x->res, "clients", arr);
	return 0;
}

void control_set_clients_fn(struct control *c, control_clients_fn fn, void *arg)
{
	pthread_mutex_lock(&c->lock);
	c->clients_fn = fn;
	c->clients_arg = arg;
	pthread_mutex_unlock(&c->lock);
}

static int control_op_checkpoint(struct control_ctx *x)
{
	int r = store_checkpoint(x->c->st);

	if (r < 0) {
		control_explain(x, "checkpoint", "pool", NULL, r);
		return r;
	}
	return 0;
}

/* The running or last scrub pass, with the damaged blocks it found. */
static int control_put_scrub(struct control_ctx *x)
{
	struct store_scrub_damage *d = calloc(STORE_SCRUB_REPORT_MAX, sizeof(*d));
	struct store_scrub_status s;
	json_t *o = json_object(), *arr = json_array();

	if (!d) {
		json_decref(o);
		json_decref(arr);
		control_set_msg(x, "scrub: out of memory");
		return -ENOMEM;
	}
	unsigned n = store_scrub_status(x->c->st, &s, d, STORE_SCRUB_REPORT_MAX);
	json_object_set_new(o, "state", json_string(store_scrub_state_name(s.state)));
#define SCRUB(f) json_object_set_new(o, #f, json_integer((json_int_t)s.f))
	SCRUB(pass);
	SCRUB(started);
	SCRUB(finished);
	SCRUB(rate);
	SCRUB(volumes_done);
	SCRUB(volumes_total);
	SCRUB(blocks_checked);
	SCRUB(blocks_walked);
	SCRUB(blocks_total);
	SCRUB(damaged_blocks);
#undef SCRUB
	json_object_set_new(o, "error",
	                    s.state == STORE_SCRUB_FAILED ? json_string(strerror(-s.err))
	                                                  : json_null());
	for (unsigned i = 0; i < n; i++) {
		json_t *e = json_object();
		json_object_set_new(e, "name", json_string(d[i].name));
		json_object_set_new(e, "offset", json_integer((json_int_t)d[i].offset));
		json_object_set_new(e, "pool_block", json_integer((json_int_t)d[i].pool_block));
		json_array_append_new(arr, e);
	}
	free(d);
	json_object_set_new(o, "damaged", arr);
	json_object_set_new(o, "damaged_more", json_integer((json_int_t)(s.damaged_names - n)));
	json_object_set_new(x->res, "scrub", o);
	return 0;
}

/* scrub.start: an optional "rate" in bytes per second. */
static int control_op_scrub_start(struct control_ctx *x)
{
	json_t *jr = json_object_get(x->req, "rate");
	json_int_t rate = 0;
	int r;

	if (jr && !json_is_null(jr)) {
		if (!json_is_integer(jr) || json_integer_value(jr) < STORE_SCRUB_RATE_MIN) {
			control_set_msg(x,
			                "scrub.start: \"rate\" is bytes per second, an integer of "
			                "at least %u",
			                STORE_SCRUB_RATE_MIN);
			return -EINVAL;
		}
		rate = json_integer_value(jr);
	}
	r = store_scrub_start(x->c->st, (uint64_t)rate);
	if (r == -EALREADY) {
		struct store_scrub_status s;
		store_scrub_status(x->c->st, &s, NULL, 0);
		control_set_msg(x, "scrub pass %u is already running", s.pass);
	} else if (r < 0) {
		control_set_msg(x, "scrub.start: %s", strerror(-r));
	}
	if (r < 0)
		return r;
	return control_put_scrub(x);
}

static int control_op_scrub_status(struct control_ctx *x)
{
	return control_put_scrub(x);
}

/* Stops the running pass and waits for it (one chunk); no pass: nothing
 * to do.  The reply is the pass as it ended. */
static int control_op_scrub_stop(struct control_ctx *x)
{
	store_scrub_stop(x->c->st);
	return control_put_scrub(x);
}

/* upgrade: hand the daemon to a new process (main.c), {"binary": PATH}
 * optional. */
static int control_op_upgrade(struct control_ctx *x)
{
	struct control_upgrade *u = calloc(1, sizeof(*u));
	json_t *b = json_object_get(x->req, "binary");
	control_upgrade_fn fn;
	void *arg;
	int r;

	pthread_mutex_lock(&x->c->lock);
	fn = x->c->upgrade_fn;
	arg = x->c->upgrade_arg;
	pthread_mutex_unlock(&x->c->lock);
	if (!u)
		return -ENOMEM;
	if (!fn) {
		control_set_msg(x, "upgrade: this cowbd cannot hand over");
		r = -EOPNOTSUPP;
	} else if (b && (!json_is_string(b) || !json_string_length(b) ||
	                 json_string_length(b) >= sizeof(u->binary))) {
		control_set_msg(x, "upgrade: \"binary\" must be a path");
		r = -EINVAL;
	} else {
		if (b)
			snprintf(u->binary, sizeof(u->binary), "%s", json_string_value(b));
		r = fn(arg, u);
		if (r < 0)
			control_set_msg(x, "upgrade: %s", u->msg);
	}
	if (r == 0) {
		json_t *o = json_object();

		json_object_set_new(o, "old_pid", json_integer(u->old_pid));
		json_object_set_new(o, "pid", json_integer(u->new_pid));
		json_object_set_new(o, "version", json_string(u->version));
		json_object_set_new(o, "carried", json_integer(u->carried));
		json_object_set_new(o, "closed", json_integer(u->closed));
		json_object_set_new(o, "pause_ms", json_real(u->pause_ms));
		json_object_set_new(o, "drain_ms", json_real(u->drain_ms));
		json_object_set_new(o, "close_ms", json_real(u->close_ms));
		json_object_set_new(o, "takeover_ms", json_real(u->takeover_ms));
		json_object_set_new(x->res, "upgrade", o);
	}
	free(u);
	return r;
}

void control_set_upgrade_fn(struct control *c, control_upgrade_fn fn, void *arg)
{
	pthread_mutex_lock(&c->lock);
	c->upgrade_fn = fn;
	c->upgrade_arg = arg;
	pthread_mutex_unlock(&c->lock);
}

void control_set_store(struct control *c, struct store *st)
{
	c->st = st;
}

static int control_op_ping(struct control_ctx *x)
{
	json_object_set_new(x->res, "protocol", json_integer(1));
	json_object_set_new(x->res, "version", json_string(COWBD_VERSION));
	return 0;
}

static const struct {
	const char *name;
	int (*fn)(struct control_ctx *x);
} control_ops[] = {
    {"volume.create", control_op_volume_create},
    {"volume.list", control_op_volume_list},
    {"volume.delete", control_op_volume_delete},
    {"volume.info", control_op_volume_info},
    {"volume.resize", control_op_volume_resize},
    {"volume.rename", control_op_volume_rename},
    {"volume.stats", control_op_volume_stats},
    {"snapshot.create", control_op_snapshot_create},
    {"snapshot.list", control_op_snapshot_list},
    {"snapshot.delete", control_op_snapshot_delete},
    {"clone", control_op_clone},
    {"rollback", control_op_rollback},
    {"stats", control_op_stats},
    {"checkpoint", control_op_checkpoint},
    {"pool.status", control_op_pool_status},
    {"compact", control_op_compact},
    {"clients", control_op_clients},
    {"diff", control_op_diff},
    {"scrub.start", control_op_scrub_start},
    {"scrub.status", control_op_scrub_status},
    {"scrub.stop", control_op_scrub_stop},
    {"ping", control_op_ping},
    {"upgrade", control_op_upgrade},
};

static json_t *control_error_json(int err, const char *msg)
{
	json_t *res = json_object();

	json_object_set_new(res, "ok", json_false());
	json_object_set_new(res, "error", json_string(msg));
	json_object_set_new(res, "errno", json_string(control_errno_name(-err)));
	return res;
}

/* Answer one request line (len bytes, no newline).  Returns the reply as a
 * malloc'd string without newline, or NULL when out of memory. */
static char *control_answer(struct control *c, const char *line, size_t len)
{
	struct control_ctx x = {.c = c};
	json_error_t jerr;
	json_t *res = NULL, *jop, *id = NULL;
	const char *op;
	char *out;
	size_t i;
	int r;

	x.req = json_loadb(line, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!x.req) {
		control_set_msg(&x, "request is not valid JSON: %s", jerr.text);
		res = control_error_json(-EINVAL, x.msg);
		goto out;
	}
	if (!json_is_object(x.req)) {
		res = control_error_json(-EINVAL, "request is not a JSON object");
		goto out;
	}
	id = json_object_get(x.req, "id");
	jop = json_object_get(x.req, "op");
	if (!json_is_string(jop)) {
		res = control_error_json(-EINVAL, "request has no \"op\" string");
		goto out;
	}
	op = json_string_value(jop);
	for (i = 0; i < sizeof(control_ops) / sizeof(control_ops[0]); i++)
		if (!strcmp(op, control_ops[i].name))
			break;
	if (i == sizeof(control_ops) / sizeof(control_ops[0])) {
		control_set_msg(&x, "unknown op \"%.64s\"", op);
		res = control_error_json(-EOPNOTSUPP, x.msg);
		goto out;
	}
	x.res = json_object();
	json_object_set_new(x.res, "ok", json_true());
	pthread_mutex_lock(&c->op_lock);
	if (c->st) {
		r = control_ops[i].fn(&x);
	} else { /* handed over: the next connection reaches the new process */
		control_set_msg(&x, "cowbd has just handed over to a new process: ask again");
		r = -ESHUTDOWN;
	}
	pthread_mutex_unlock(&c->op_lock);
	if (r < 0) {
		json_decref(x.res);
		if (!x.msg[0])
			control_set_msg(&x, "%s: %s", op, strerror(-r));
		say_info("control: %s refused: %s", op, x.msg);
		res = control_error_json(r, x.msg);
	} else {
		res = x.res;
	}
out:
	if (id)
		json_object_set(res, "id", id);
	out = json_dumps(res, JSON_COMPACT);
	json_decref(res);
	json_decref(x.req);
	return out;
}

char *control_answer_line(struct store *st, const char *line, size_t len)
{
	struct control c = {.st = st};
	char *out;

	pthread_mutex_init(&c.lock, NULL);
	pthread_mutex_init(&c.op_lock, NULL);
	out = control_answer(&c, line, len);
	pthread_mutex_destroy(&c.op_lock);
	pthread_mutex_destroy(&c.lock);
	return out;
}

/* ---- sockets and threads ---------------------------------------------- */

/* Send all of buf; false when the client is gone or not reading. */
static bool control_send(int fd, const char *buf, size_t len)
{
	while (len) {
		ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return false;
		buf += n;
		len -= (size_t)n;
	}
	return true;
}

static bool control_reply(int fd, char *reply)
{
	bool ok;
	size_t n;

	if (!reply)
		return false;
	n = strlen(reply);
	reply[n] = '\n'; /* json_dumps left room: we overwrite the NUL */
	ok = control_send(fd, reply, n + 1);
	free(reply);
	return ok;
}

static void control_client_done(struct control_client *cl)
{
	struct control *c = cl->c;

	pthread_mutex_lock(&c->lock);
	if (cl->prev)
		cl->prev->next = cl->next;
	else
		c->clients = cl->next;
	if (cl->next)
		cl->next->prev = cl->prev;
	close(cl->fd);
	c->nclients--;
	pthread_cond_broadcast(&c->idle);
	pthread_mutex_unlock(&c->lock);
	free(cl);
}

/* Answer one request unless control_stop has begun (then false, like a
 * client gone): busy meanwhile, so control_stop waits for the reply. */
static bool control_serve(struct control_client *cl, const char *line, size_t len)
{
	struct control *c = cl->c;
	bool ok;

	pthread_mutex_lock(&c->lock);
	ok = !c->stopping;
	cl->busy = ok;
	pthread_mutex_unlock(&c->lock);
	if (!ok)
		return false;
	ok = control_reply(cl->fd, control_answer(c, line, len));
	pthread_mutex_lock(&c->lock);
	cl->busy = false;
	pthread_cond_broadcast(&c->idle);
	pthread_mutex_unlock(&c->lock);
	return ok;
}

/* Serve one client: read lines, answer each in order, until EOF, error,
 * an over-long line, idle timeout, or control_stop() shutting us down. */
static void *control_client_main(void *arg)
{
	struct control_client *cl = arg;
	char *buf = malloc(CONTROL_MAX_REQ + 1);
	size_t have = 0, start, i;
	bool eof = false;
	ssize_t n;

	while (buf && !eof) {
		n = recv(cl->fd, buf + have, CONTROL_MAX_REQ + 1 - have, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			/* EOF: answer a last unterminated request, then go. */
			eof = true;
			if (n < 0 || have == 0)
				break;
			buf[have++] = '\n';
		} else {
			have += (size_t)n;
		}
		start = 0;
		for (i = 0; i < have; i++) {
			if (buf[i] != '\n')
				continue;
			size_t len = i - start;

			if (len && buf[start + len - 1] == '\r')
				len--;
			if (len && !control_serve(cl, buf + start, len))
				goto out;
			start = i + 1;
		}
		memmove(buf, buf + start, have - start);
		have -= start;
		if (have > CONTROL_MAX_REQ) {
			char msg[80];

			snprintf(msg, sizeof(msg), "request longer than %u bytes", CONTROL_MAX_REQ);
			json_t *res = control_error_json(-EMSGSIZE, msg);
			control_reply(cl->fd, json_dumps(res, JSON_COMPACT));
			json_decref(res);
			break;
		}
	}
out:
	free(buf);
	control_client_done(cl);
	return NULL;
}

static void control_accept_one(struct control *c)
{
	struct timeval tv = {.tv_sec = CONTROL_IDLE_SECS};
	struct control_client *cl;
	pthread_attr_t attr;
	pthread_t t;
	int fd, r;

	fd = accept4(c->sock.fd, NULL, NULL, SOCK_CLOEXEC);
	if (fd < 0) {
		if (errno != EINTR && errno != EAGAIN && errno != ECONNABORTED)
			say_warn("control: accept: %s", strerror(errno));
		if (errno == EMFILE || errno == ENFILE)
			usleep(100 * 1000);
		return;
	}
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));

	pthread_mutex_lock(&c->lock);
	cl = calloc(1, sizeof(*cl));
	if (!cl)
		goto fail_locked;
	cl->c = c;
	cl->fd = fd;
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	r = pthread_create(&t, &attr, control_client_main, cl);
	pthread_attr_destroy(&attr);
	if (r) {
		say_warn("control: cannot start client thread: %s", strerror(r));
		free(cl);
		goto fail_locked;
	}
	cl->next = c->clients;
	if (c->clients)
		c->clients->prev = cl;
	c->clients = cl;
	c->nclients++;
	pthread_mutex_unlock(&c->lock);
	return;

fail_locked:
	pthread_mutex_unlock(&c->lock);
	close(fd);
}

static void *control_accept_main(void *arg)
{
	struct control *c = arg;
	struct pollfd p[2] = {
	    {.fd = c->sock.fd, .events = POLLIN},
	    {.fd = c->stop_pipe[0], .events = POLLIN},
	};

	for (;;) {
		bool stopping;

		/* At the client limit, leave further connections queued in the
		 * backlog (their connect() succeeds or blocks) until a client
		 * finishes: a burst of scripted cowctl calls waits, never fails. */
		pthread_mutex_lock(&c->lock);
		while (c->nclients >= CONTROL_MAX_CLIENTS && !c->accept_stop)
			pthread_cond_wait(&c->idle, &c->lock);
		stopping = c->accept_stop;
		pthread_mutex_unlock(&c->lock);
		if (stopping)
			break;
		if (poll(p, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			say_error("control: poll: %s", strerror(errno));
			break;
		}
		if (p[1].revents)
			break;
		if (p[0].revents)
			control_accept_one(c);
	}
	return NULL;
}

/* A control object for st with its stop pipe, not serving yet (sock.fd
 * -1).  NULL after one line in err, errno set. */
static struct control *control_new(struct store *st, char *err, size_t errlen)
{
	struct control *c = calloc(1, sizeof(*c));

	if (!c) {
		snprintf(err, errlen, "out of memory");
		errno = ENOMEM;
		return NULL;
	}
	c->st = st;
	c->sock.fd = -1;
	if (pipe2(c->stop_pipe, O_CLOEXEC) < 0) {
		int e = errno;

		snprintf(err, errlen, "pipe: %s", strerror(e));
		free(c);
		errno = e;
		return NULL;
	}
	return c;
}

/* Serve c->sock, a listening socket now c's: start the accept thread.
 * Returns c, or NULL after one line in err with errno set and c freed
 * (its socket closed, and unlinked if sockets_listen_unix made it). */
static struct control *control_run(struct control *c, char *err, size_t errlen)
{
	sigset_t all, old;
	int r;

	pthread_mutex_init(&c->lock, NULL);
	pthread_mutex_init(&c->op_lock, NULL);
	pthread_cond_init(&c->idle, NULL);

	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	r = -pthread_create(&c->accept_thread, NULL, control_accept_main, c);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (r == 0)
		return c;
	snprintf(err, errlen, "cannot start control thread: %s", strerror(-r));
	pthread_cond_destroy(&c->idle);
	pthread_mutex_destroy(&c->op_lock);
	pthread_mutex_destroy(&c->lock);
	sockets_close_unix(&c->sock);
	close(c->stop_pipe[0]);
	close(c->stop_pipe[1]);
	free(c);
	errno = -r;
	return NULL;
}

struct control *control_start(struct store *st, const char *path, char *err, size_t errlen)
{
	struct control *c;
	int r;

	if (errlen)
		err[0] = '\0';
	if (!path || !path[0] || strlen(path) >= sizeof(c->path)) {
		snprintf(err, errlen, "control socket path %s",
		         path && path[0] ? "too long" : "missing");
		errno = EINVAL;
		return NULL;
	}
	if (!(c = control_new(st, err, errlen)))
		return NULL;
	snprintf(c->path, sizeof(c->path), "%s", path);
	if ((r = sockets_listen_unix(&c->sock, c->path, 0600, SOCKETS_MKDIR, err, errlen)) < 0) {
		close(c->stop_pipe[0]);
		close(c->stop_pipe[1]);
		free(c);
		errno = -r;
		return NULL;
	}
	return control_run(c, err, errlen);
}

struct control *control_start_sock(struct store *st, const struct sockets_unix *s, char *err,
                                   size_t errlen)
{
	struct control *c = control_start_fd(st, s->fd, err, errlen);

	if (c) { /* the file is ours to remove now, as if we had made it */
		memcpy(c->sock.path, s->path, sizeof(c->sock.path));
		c->sock.dev = s->dev;
		c->sock.ino = s->ino;
	}
	return c;
}

struct control *control_start_fd(struct store *st, int fd, char *err, size_t errlen)
{
	int fl = fcntl(fd, F_GETFL);
	struct control *c;

	if (errlen)
		err[0] = '\0';
	/* Non-blocking: a connection reset between poll and accept must not
	 * leave the accept thread blocked where control_stop cannot wake it. */
	if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0 ||
	    fcntl(fd, F_SETFD, FD_CLOEXEC) < 0) {
		int e = errno;

		snprintf(err, errlen, "control socket fd %d: %s", fd, strerror(e));
		close(fd);
		errno = e;
		return NULL;
	}
	if (!(c = control_new(st, err, errlen))) {
		close(fd);
		return NULL;
	}
	c->sock.fd = fd; /* no path: the socket file is its maker's */
	return control_run(c, err, errlen);
}

/* Stop the accept thread (stopping, or handing the socket off). */
static void control_stop_accepting(struct control *c)
{
	pthread_mutex_lock(&c->lock);
	c->accept_stop = true;
	pthread_cond_broadcast(&c->idle);
	pthread_mutex_unlock(&c->lock);
	(void)!write(c->stop_pipe[1], "x", 1);
	pthread_join(c->accept_thread, NULL);
}

static int control_start_accepting(struct control *c)
{
	sigset_t all, old;
	char b;
	int r;

	while (read(c->stop_pipe[0], &b, 1) < 0 && errno == EINTR)
		;
	pthread_mutex_lock(&c->lock);
	c->accept_stop = false;
	pthread_mutex_unlock(&c->lock);
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	r = -pthread_create(&c->accept_thread, NULL, control_accept_main, c);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	return r;
}

int control_hand_off(struct control *c, struct sockets_unix *out)
{
	if (c->handed_off)
		return -EBUSY;
	control_stop_accepting(c);
	pthread_mutex_lock(&c->lock);
	c->handed_off = true;
	pthread_mutex_unlock(&c->lock);
	*out = c->sock;
	c->sock = (struct sockets_unix){.fd = -1};
	return 0;
}

void control_take_back(struct control *c, const struct sockets_unix *s)
{
	int r;

	c->sock = *s;
	c->handed_off = false;
	r = control_start_accepting(c);
	if (r)
		say_error("control: cannot accept again: %s", strerror(-r));
}

void control_stop(struct control *c)
{
	struct control_client *cl;

	if (!c)
		return;
	if (!c->handed_off) /* else no accept thread runs */
		control_stop_accepting(c);
	pthread_mutex_lock(&c->lock);
	c->stopping = true;
	pthread_mutex_unlock(&c->lock);

	pthread_mutex_lock(&c->lock);
	for (;;) { /* requests being answered send their replies first */
		for (cl = c->clients; cl && !cl->busy; cl = cl->next)
			;
		if (!cl)
			break;
		pthread_cond_wait(&c->idle, &c->lock);
	}
	for (cl = c->clients; cl; cl = cl->next)
		shutdown(cl->fd, SHUT_RDWR);
	while (c->nclients)
		pthread_cond_wait(&c->idle, &c->lock);
	pthread_mutex_unlock(&c->lock);

	sockets_close_unix(&c->sock);
	close(c->stop_pipe[0]);
	close(c->stop_pipe[1]);
	pthread_cond_destroy(&c->idle);
	pthread_mutex_destroy(&c->op_lock);
	pthread_mutex_destroy(&c->lock);
	free(c);
}
