/*-------------------------------------------------------------------------
 *
 * crypto_paths.c
 *	  Personal data: the JSON paths of protect() ("$.a.b") -- parsing them,
 *	  reading a field of a document, and replacing fields in one.
 *
 * That is the whole syntax: "$" and one or more ".member", a member being
 * letters, digits, "_" or "-"; no subscripts, wildcards or quoted members.
 * Replacing rebuilds only the objects on the paths; the rest of the
 * document is copied as it is.
 *
 * Locking: none.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <ctype.h>

#include "lib/stringinfo.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"

#include "crypto.h"

/*
 * Parse a path "$.a.b": "$" followed by one or more ".member", a member
 * being letters, digits, "_" or "-".  Returns false when it is not one.
 */
bool
crypto_parse_path(const char *s, JsonPath *p)
{
	const char *c = s;
	char	   *keys[MAX_PATH_DEPTH];
	int			depth = 0;

	if (c[0] != '$' || c[1] != '.')
		return false;
	c++;
	while (*c == '.')
	{
		const char *start = ++c;

		while (isalnum((unsigned char) *c) || *c == '_' || *c == '-')
			c++;
		if (c == start || depth == MAX_PATH_DEPTH)
			return false;
		keys[depth++] = pnstrdup(start, c - start);
	}
	if (*c != '\0')
		return false;
	p->text = pstrdup(s);
	p->depth = depth;
	p->keys = palloc(sizeof(char *) * depth);
	memcpy(p->keys, keys, sizeof(char *) * depth);
	return true;
}

void
crypto_check_path(const char *s, JsonPath *p, const char *what)
{
	if (strlen(s) > ES_MAX_ID_BYTES || !crypto_parse_path(s, p))
		ereport(ERROR,
				(errcode(ERRCODE_ES_INVALID_PATH),
				 errmsg("invalid %s path \"%s\"", what, strlen(s) > 64 ? "(too long)" : s),
				 errdetail("A path is \"$\" followed by one or more \".member\" (letters, digits, \"_\", \"-\"), at most %d deep.",
						   MAX_PATH_DEPTH),
				 errhint("For example '$.email' or '$.owner.name'.")));
}

/* Is a a prefix path of b (or equal)? */
bool
crypto_path_prefix(const JsonPath *a, const JsonPath *b)
{
	int			i;

	if (a->depth > b->depth)
		return false;
	for (i = 0; i < a->depth; i++)
		if (strcmp(a->keys[i], b->keys[i]) != 0)
			return false;
	return true;
}

/* The value at the path, or NULL. */
JsonbValue *
crypto_path_get(Jsonb *jb, const JsonPath *p)
{
	JsonbContainer *c = &jb->root;
	JsonbValue *v = NULL;
	int			i;

	for (i = 0; i < p->depth; i++)
	{
		JsonbValue	k;

		if (!JsonContainerIsObject(c))
			return NULL;
		k.type = jbvString;
		k.val.string.val = p->keys[i];
		k.val.string.len = strlen(p->keys[i]);
		v = findJsonbValueFromContainer(c, JB_FOBJECT, &k);
		if (v == NULL)
			return NULL;
		if (i + 1 < p->depth)
		{
			if (v->type != jbvBinary)
				return NULL;
			c = v->val.binary.data;
		}
	}
	return v;
}

/*
 * Replacing fields writes the new document's binary form directly: every
 * key, and every value off the paths, is copied as the bytes it is, and only
 * the objects on the paths get new entries.  Rebuilding through
 * pushJsonbValue() and JsonbValueToJsonb() unpacked the whole document
 * into JsonbValues, sorted its keys again and serialised it anew: 5,800
 * instructions per event of the benchmark's protected read, more than the
 * rest of the read.  The layout is the one JsonbValueToJsonb() writes
 * (keys then values, an offset in every JB_OFFSET_STRIDE'th entry and a
 * length in the others, numerics and containers padded to a 4-byte
 * boundary counted from the start of the datum), so the result is the same
 * bytes as the rebuilt document.
 */

/* Append bytes (the buffer is sized for the document: rarely enlarged). */
static inline void
append(StringInfo out, const void *p, int len)
{
	if (out->len + len >= out->maxlen)
		enlargeStringInfo(out, len);
	memcpy(out->data + out->len, p, len);
	out->len += len;
}

/* Pad to a 4-byte boundary, as the datum's own padding does. */
static inline void
pad_to_int(StringInfo out)
{
	static const char zeros[sizeof(uint32)] = {0};
	int			pad = INTALIGN(out->len) - out->len;

	if (pad > 0)
		append(out, zeros, pad);
}

/*
 * Append a child's value: the bytes [off, off + len) of its container's data
 * at base, entry its entry.  Returns the entry's type.
 */
static uint32
copy_child(StringInfo out, const char *base, uint32 entry, uint32 off, uint32 len)
{
	if (JBE_ISNUMERIC(entry) || JBE_ISCONTAINER(entry))
	{
		/* its padding belongs to its old place: skip it, pad anew */
		pad_to_int(out);
		len -= INTALIGN(off) - off;
		off = INTALIGN(off);
	}
	append(out, base + off, len);
	return entry & JENTRY_TYPEMASK;
}

/* Append a replacement value: a scalar as itself, a container whole. */
static uint32
put_replacement(StringInfo out, const Jsonb *value)
{
	if (JB_ROOT_IS_SCALAR(value))
		return copy_child(out, (const char *) &value->root.children[1], value->root.children[0],
						  0, JBE_OFFLENFLD(value->root.children[0]));
	pad_to_int(out);
	append(out, (const char *) &value->root, VARSIZE(value) - VARHDRSZ);
	return JENTRY_ISCONTAINER;
}

/* Where a child's data ends: its entry holds the end or the length. */
#define CHILD_END(entry, start) \
	(JBE_HAS_OFF(entry) ? JBE_OFFLENFLD(entry) : (start) + JBE_OFFLENFLD(entry))

/* Does path p go through the key (of keylen bytes) at depth `depth`? */
static inline bool
through_key(const JsonPath *p, int depth, const char *key, uint32 keylen)
{
	return p->depth > depth && strlen(p->keys[depth]) == keylen &&
		memcmp(p->keys[depth], key, keylen) == 0;
}

/* Fill entry i of the container whose entries begin at `at`. */
static void
set_entry(StringInfo out, int at, int i, uint32 type, uint32 *totallen, uint32 len)
{
	uint32		entry;

	*totallen += len;
	if (*totallen > JENTRY_OFFLENMASK)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("total size of jsonb object elements exceeds the maximum of %u bytes",
						JENTRY_OFFLENMASK)));
	entry = type | ((i % JB_OFFSET_STRIDE) == 0 ? (JENTRY_HAS_OFF | *totallen) : len);
	memcpy(out->data + at + i * sizeof(JEntry), &entry, sizeof(JEntry));
}

/*
 * Append object container c (at depth `depth` of the paths) with the values
 * at the n paths replaced by vals: one pass over the document for all
 * fields.  Paths that do not exist are ignored.  out->len is a multiple of 4.
 */
static void
rewrite_object(StringInfo out, const JsonbContainer *c, int depth, int n,
			   const JsonPath **paths, Jsonb **vals)
{
	int			npairs = JsonContainerSize(c);
	const char *base = (const char *) &c->children[npairs * 2];
	int			entries;
	uint32		totallen = 0;
	uint32		keyoff = 0;
	uint32		valoff;
	int			i;

	append(out, (const char *) &c->header, sizeof(uint32));
	entries = out->len;
	enlargeStringInfo(out, npairs * 2 * sizeof(JEntry));
	out->len += npairs * 2 * sizeof(JEntry);

	/* the keys, as they are */
	for (i = 0; i < npairs; i++)
	{
		uint32		entry = c->children[i];
		uint32		end = CHILD_END(entry, keyoff);
		int			start = out->len;
		uint32		type = copy_child(out, base, entry, keyoff, end - keyoff);

		set_entry(out, entries, i, type, &totallen, out->len - start);
		keyoff = end;
	}

	/* the values, those on the paths replaced or rewritten */
	valoff = keyoff;
	keyoff = 0;
	for (i = 0; i < npairs; i++)
	{
		uint32		kentry = c->children[i];
		uint32		kend = CHILD_END(kentry, keyoff);
		const char *key = base + keyoff;
		uint32		keylen = kend - keyoff;
		uint32		entry = c->children[npairs + i];
		uint32		end = CHILD_END(entry, valoff);

		/* the value as a container, where its entry says it is one */
		const JsonbContainer *child = (const JsonbContainer *) (base + INTALIGN(valoff));
		int			replace = -1;
		int			deeper = 0;
		int			start = out->len;
		uint32		type;
		int			j;

		for (j = 0; j < n; j++)
			if (through_key(paths[j], depth, key, keylen))
			{
				if (paths[j]->depth == depth + 1)
					replace = j;
				else
					deeper++;
			}
		if (replace >= 0)
			type = put_replacement(out, vals[replace]);
		else if (deeper > 0 && JBE_ISCONTAINER(entry) && JsonContainerIsObject(child))
		{
			/* only the paths going through this key, one level down */
			const JsonPath **sub = palloc(sizeof(JsonPath *) * deeper);
			Jsonb	  **subv = palloc(sizeof(Jsonb *) * deeper);
			int			m = 0;

			for (j = 0; j < n; j++)
				if (paths[j]->depth > depth + 1 && through_key(paths[j], depth, key, keylen))
				{
					sub[m] = paths[j];
					subv[m++] = vals[j];
				}
			pad_to_int(out);
			rewrite_object(out, child, depth + 1, m, sub, subv);
			type = JENTRY_ISCONTAINER;
			pfree(sub);
			pfree(subv);
		}
		else
			type = copy_child(out, base, entry, valoff, end - valoff);
		set_entry(out, entries, npairs + i, type, &totallen, out->len - start);
		keyoff = kend;
		valoff = end;
	}
}

Jsonb *
crypto_replace_paths(Jsonb *doc, int n, const JsonPath **paths, Jsonb **vals)
{
	StringInfoData out;
	int			i;

	if (n == 0 || !JsonContainerIsObject(&doc->root))
		return doc;
	/* room for the document and the new values, each padded */
	out.maxlen = VARSIZE(doc) + 1;
	for (i = 0; i < n; i++)
		out.maxlen += VARSIZE(vals[i]) + sizeof(uint32);
	out.data = palloc(out.maxlen);
	out.len = VARHDRSZ;
	out.cursor = 0;
	rewrite_object(&out, &doc->root, 0, n, paths, vals);
	SET_VARSIZE(out.data, out.len);
	return (Jsonb *) out.data;
}

char *
crypto_jsonb_value_text(JsonbValue *v, int *len)
{
	StringInfoData buf;

	if (v->type == jbvBinary)
	{
		initStringInfo(&buf);
		JsonbToCString(&buf, v->val.binary.data, v->val.binary.len);
	}
	else
	{
		Jsonb	   *j = JsonbValueToJsonb(v);

		initStringInfo(&buf);
		JsonbToCString(&buf, &j->root, VARSIZE(j));
	}
	*len = buf.len;
	return buf.data;
}

Jsonb *
crypto_jsonb_string(const char *s, int len)
{
	JsonbValue	v;

	v.type = jbvString;
	v.val.string.val = (char *) s;
	v.val.string.len = len;
	return JsonbValueToJsonb(&v);
}

Jsonb *
crypto_jsonb_null(void)
{
	JsonbValue	v;

	v.type = jbvNull;
	return JsonbValueToJsonb(&v);
}
