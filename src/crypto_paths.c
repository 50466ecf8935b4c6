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
 * Push a replacement value: a scalar as itself, a container as binary.
 */
static void
push_replacement(JsonbParseState **st, Jsonb *value)
{
	JsonbValue	v;

	if (JB_ROOT_IS_SCALAR(value))
		JsonbExtractScalar(&value->root, &v);
	else
	{
		v.type = jbvBinary;
		v.val.binary.data = &value->root;
		v.val.binary.len = VARSIZE(value) - VARHDRSZ;
	}
	(void) pushJsonbValue(st, WJB_VALUE, &v);
}

/*
 * Rebuild the object container c (at depth `depth` of the paths) with the
 * values at the n paths replaced by vals: one pass over the document for
 * all fields, instead of one jsonb_set() per field.  Paths that do not
 * exist are ignored.
 */
static JsonbValue *
rebuild_object(JsonbParseState **st, JsonbContainer *c, int depth, int n,
			   const JsonPath **paths, Jsonb **vals)
{
	JsonbIterator *it = JsonbIteratorInit(c);
	JsonbValue	v;
	JsonbIteratorToken tok;
	JsonbValue *res = NULL;

	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		int			i;
		int			deeper = 0;
		int			replace = -1;
		JsonbValue	key;

		if (tok != WJB_KEY)
		{
			res = pushJsonbValue(st, tok, tok < WJB_BEGIN_ARRAY ? &v : NULL);
			continue;
		}
		key = v;
		for (i = 0; i < n; i++)
		{
			const JsonPath *p = paths[i];

			if (p->depth > depth && strlen(p->keys[depth]) == (size_t) key.val.string.len &&
				memcmp(p->keys[depth], key.val.string.val, key.val.string.len) == 0)
			{
				if (p->depth == depth + 1)
					replace = i;
				else
					deeper++;
			}
		}
		(void) pushJsonbValue(st, WJB_KEY, &key);
		tok = JsonbIteratorNext(&it, &v, true);
		Assert(tok == WJB_VALUE);
		if (replace >= 0)
			push_replacement(st, vals[replace]);
		else if (deeper > 0 && v.type == jbvBinary && JsonContainerIsObject(v.val.binary.data))
		{
			/* only the paths going through this key, one level down */
			const JsonPath **sub = palloc(sizeof(JsonPath *) * deeper);
			Jsonb	  **subv = palloc(sizeof(Jsonb *) * deeper);
			int			m = 0;

			for (i = 0; i < n; i++)
				if (paths[i]->depth > depth + 1 &&
					strlen(paths[i]->keys[depth]) == (size_t) key.val.string.len &&
					memcmp(paths[i]->keys[depth], key.val.string.val, key.val.string.len) == 0)
				{
					sub[m] = paths[i];
					subv[m++] = vals[i];
				}
			rebuild_object(st, v.val.binary.data, depth + 1, m, sub, subv);
		}
		else
			(void) pushJsonbValue(st, WJB_VALUE, &v);
	}
	return res;
}

Jsonb *
crypto_replace_paths(Jsonb *doc, int n, const JsonPath **paths, Jsonb **vals)
{
	JsonbParseState *st = NULL;

	if (n == 0)
		return doc;
	return JsonbValueToJsonb(rebuild_object(&st, &doc->root, 0, n, paths, vals));
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
