/*-------------------------------------------------------------------------
 *
 * operator.c
 *	  What a task does: the operator specs and their validation.
 *
 * A task's operator is a jsonb object {"operator": NAME, ARG: VALUE, ...},
 * built by the constructors orchestrator.sql(), http_fetch(), gunzip() and
 * copy_into(), or written by hand.  This file is the one place that knows
 * each operator's arguments: add_task and the constructors both validate
 * through operator_validate(), so a spec that passes here is one the
 * workers can run.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "nodes/parsenodes.h"
#include "nodes/value.h"
#include "parser/parser.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/timestamp.h"

#include "orchestrator.h"
#include "template.h"

typedef enum ArgKind
{
	ARG_TEMPLATE,				/* text, rendered when the task runs */
	ARG_URL,					/* templated http(s) URL */
	ARG_TARGET,					/* templated table name */
	ARG_TEXT,					/* text, one of "choices" if given */
	ARG_CHAR,					/* a single one-byte character */
	ARG_COLUMNS,				/* "name type, ..." */
	ARG_TASK,					/* the id of an upstream task */
	ARG_BOOL,
	ARG_BYTES,					/* a positive integer */
	ARG_COUNT,					/* an integer, zero or more */
	ARG_INTERVAL,				/* a positive interval, as text */
	ARG_HEADERS					/* object of templated header values */
} ArgKind;

typedef struct OperatorArg
{
	const char *name;
	ArgKind		kind;
	bool		required;		/* must be present and not null */
	const char *const *choices;
	bool		legacy;			/* an old name, read but not offered */
} OperatorArg;

typedef struct OperatorDef
{
	const char *name;
	bool		artifact;		/* produces an artifact downstream tasks read */
	const OperatorArg *args;
} OperatorDef;

static const char *const http_methods[] = {
	"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", NULL
};
static const char *const sensor_methods[] = {"HEAD", "GET", NULL};
static const char *const copy_formats[] = {"csv", "text", "binary", NULL};
static const char *const copy_compressions[] = {"auto", "gzip", "none", NULL};
static const char *const copy_modes[] = {"append", "replace", "partition", NULL};
static const char *const copy_on_errors[] = {"stop", "skip", NULL};

static const OperatorArg sql_args[] = {
	{"query", ARG_TEMPLATE, true, NULL},
	{NULL}
};

static const OperatorArg http_fetch_args[] = {
	{"url", ARG_URL, true, NULL},
	{"method", ARG_TEXT, false, http_methods},
	{"headers", ARG_HEADERS, false, NULL},
	{"body", ARG_TEMPLATE, false, NULL},
	{"timeout", ARG_INTERVAL, false, NULL},
	{"max_bytes", ARG_BYTES, false, NULL},
	{NULL}
};

static const OperatorArg gunzip_args[] = {
	{"input", ARG_TASK, true, NULL},
	{NULL}
};

static const OperatorArg copy_into_args[] = {
	{"target", ARG_TARGET, true, NULL},
	{"input", ARG_TASK, false, NULL},
	{"url", ARG_URL, false, NULL},
	{"format", ARG_TEXT, false, copy_formats},
	{"header", ARG_BOOL, false, NULL},
	{"delimiter", ARG_CHAR, false, NULL},
	{"null_string", ARG_TEXT, false, NULL},
	{"compression", ARG_TEXT, false, copy_compressions},
	{"mode", ARG_TEXT, false, copy_modes},
	{"create_table", ARG_BOOL, false, NULL},
	{"columns", ARG_COLUMNS, false, NULL},
	{"on_error", ARG_TEXT, false, copy_on_errors},
	{"reject_limit", ARG_COUNT, false, NULL},
	{"partition_by", ARG_TEXT, false, NULL},
	/* create_table's name in specs written under version 0.1 */
	{"create", ARG_BOOL, false, NULL, true},
	{NULL}
};

/* sensors: poked until true, between pokes up_for_reschedule (sensor.c) */
static const OperatorArg sql_sensor_args[] = {
	{"query", ARG_TEMPLATE, true, NULL},
	{"poke_interval", ARG_INTERVAL, false, NULL},
	{"timeout", ARG_INTERVAL, false, NULL},
	{"soft_fail", ARG_BOOL, false, NULL},
	{NULL}
};

static const OperatorArg http_sensor_args[] = {
	{"url", ARG_URL, true, NULL},
	{"poke_interval", ARG_INTERVAL, false, NULL},
	{"timeout", ARG_INTERVAL, false, NULL},
	{"soft_fail", ARG_BOOL, false, NULL},
	{"method", ARG_TEXT, false, sensor_methods},
	{"headers", ARG_HEADERS, false, NULL},
	{NULL}
};

static const OperatorDef operator_defs[] = {
	{"sql", false, sql_args},
	{"http_fetch", true, http_fetch_args},
	{"gunzip", true, gunzip_args},
	{"copy_into", false, copy_into_args},
	{"sql_sensor", false, sql_sensor_args},
	{"http_sensor", false, http_sensor_args},
};

#define OPERATORS_HINT \
	"The operators are sql, http_fetch, gunzip, copy_into, sql_sensor and http_sensor."
#define BUILD_HINT \
	"Build one with orchestrator.sql(), http_fetch(), gunzip(), copy_into(), sql_sensor() or http_sensor()."

JsonbValue *
jsonb_get_key(Jsonb *obj, const char *key)
{
	JsonbValue	k;

	if (!JB_ROOT_IS_OBJECT(obj) || JB_ROOT_IS_SCALAR(obj))
		return NULL;
	k.type = jbvString;
	k.val.string.val = (char *) key;
	k.val.string.len = strlen(key);
	return findJsonbValueFromContainer(&obj->root, JB_FOBJECT, &k);
}

static char *
jbv_cstring(JsonbValue *v)
{
	return pnstrdup(v->val.string.val, v->val.string.len);
}

static const char *
jbv_type_name(JsonbValue *v)
{
	switch (v->type)
	{
		case jbvNull:
			return "null";
		case jbvString:
			return "a string";
		case jbvNumeric:
			return "a number";
		case jbvBool:
			return "a boolean";
		default:
			return "an array or object";
	}
}

static const OperatorDef *
find_operator(Jsonb *spec, bool missing_ok)
{
	JsonbValue *name;
	char	   *str;

	if (spec == NULL || !JB_ROOT_IS_OBJECT(spec) || JB_ROOT_IS_SCALAR(spec))
	{
		if (missing_ok)
			return NULL;
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("an operator must be a jsonb object"),
				 errhint(BUILD_HINT)));
	}
	name = jsonb_get_key(spec, "operator");
	if (name == NULL || name->type != jbvString)
	{
		if (missing_ok)
			return NULL;
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("an operator needs an \"operator\" key naming its kind"),
				 errhint(BUILD_HINT)));
	}
	str = jbv_cstring(name);
	for (int i = 0; i < lengthof(operator_defs); i++)
		if (strcmp(str, operator_defs[i].name) == 0)
			return &operator_defs[i];
	if (missing_ok)
		return NULL;
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("unknown operator \"%s\"", str),
			 errhint(OPERATORS_HINT)));
	return NULL;				/* keep compiler quiet */
}

static void arg_error(const char *op, const OperatorArg *arg, const char *msg) pg_attribute_noreturn();
static void validate_copy_into(Jsonb *spec);

static void
arg_error(const char *op, const OperatorArg *arg, const char *msg)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("invalid %s argument of operator %s: %s", arg->name, op, msg)));
}

static void
validate_url(const char *op, const OperatorArg *arg, const char *url,
			 const char *what)
{
	const char *tmpl = strstr(url, "{{");
	const char *sep = strstr(url, "://");

	template_validate(url, what);

	/* the scheme can be checked now unless a template produces it */
	if (sep != NULL && (tmpl == NULL || sep < tmpl))
	{
		int			len = sep - url;

		if (!((len == 4 && pg_strncasecmp(url, "http", 4) == 0) ||
			  (len == 5 && pg_strncasecmp(url, "https", 5) == 0)))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("URL scheme \"%.*s\" is not allowed in %s", len, url, what),
					 errdetail("Only http and https URLs can be fetched.")));
	}
	else if (tmpl != url)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("URL \"%s\" in %s has no scheme", url, what),
				 errhint("Write the URL in full, such as \"https://example.com/data.csv.gz\".")));
}

static void
validate_columns(const char *op, const OperatorArg *arg, const char *columns)
{
	List	   *stmts;
	CreateStmt *create;
	ListCell   *lc;

	stmts = raw_parser(psprintf("CREATE TABLE t (%s)", columns), RAW_PARSE_DEFAULT);
	if (list_length(stmts) != 1 ||
		!IsA(((RawStmt *) linitial(stmts))->stmt, CreateStmt))
		arg_error(op, arg, "expected \"name type, ...\"");
	create = (CreateStmt *) ((RawStmt *) linitial(stmts))->stmt;
	if (create->tableElts == NIL || create->inhRelations != NIL ||
		create->partspec != NULL || create->options != NIL ||
		create->accessMethod != NULL || create->tablespacename != NULL)
		arg_error(op, arg, "expected \"name type, ...\"");
	foreach(lc, create->tableElts)
	{
		if (!IsA(lfirst(lc), ColumnDef))
			arg_error(op, arg, "only column definitions are allowed");
	}
}

static void
validate_arg(const char *op, const OperatorArg *arg, JsonbValue *v,
			 const char *task_id)
{
	const char *what;
	char	   *str = NULL;

	if (task_id != NULL)
		what = psprintf("the %s of task \"%s\"", arg->name, task_id);
	else
		what = psprintf("the %s argument", arg->name);

	if (v->type == jbvNull)
	{
		if (arg->required)
			arg_error(op, arg, "it must not be null");
		return;
	}

	switch (arg->kind)
	{
		case ARG_BOOL:
			if (v->type != jbvBool)
				arg_error(op, arg, psprintf("expected a boolean, not %s", jbv_type_name(v)));
			return;
		case ARG_BYTES:
			{
				int64		n;

				if (v->type != jbvNumeric)
					arg_error(op, arg, psprintf("expected a number, not %s", jbv_type_name(v)));
				n = DatumGetInt64(DirectFunctionCall1(numeric_int8,
													  NumericGetDatum(v->val.numeric)));
				if (n <= 0)
					arg_error(op, arg, "it must be positive");
				return;
			}
		case ARG_COUNT:
			{
				Datum		n;

				if (v->type != jbvNumeric)
					arg_error(op, arg, psprintf("expected a number, not %s", jbv_type_name(v)));
				n = NumericGetDatum(v->val.numeric);
				if (!DatumGetBool(DirectFunctionCall2(numeric_eq, n,
													  DirectFunctionCall2(numeric_trunc, n,
																		  Int32GetDatum(0)))))
					arg_error(op, arg, "expected a whole number");
				if (DatumGetInt64(DirectFunctionCall1(numeric_int8, n)) < 0)
					arg_error(op, arg, "it must not be negative");
				return;
			}
		case ARG_HEADERS:
			{
				JsonbIterator *it;
				JsonbValue	hv;
				JsonbIteratorToken tok;
				char	   *name = NULL;

				if (v->type != jbvBinary || !JsonContainerIsObject(v->val.binary.data))
					arg_error(op, arg, "expected an object of header names and values");
				it = JsonbIteratorInit(v->val.binary.data);
				while ((tok = JsonbIteratorNext(&it, &hv, true)) != WJB_DONE)
				{
					if (tok == WJB_KEY)
					{
						name = jbv_cstring(&hv);
						if (name[0] == '\0' || strpbrk(name, " \t\r\n:") != NULL)
							arg_error(op, arg, psprintf("invalid header name \"%s\"", name));
					}
					else if (tok == WJB_VALUE)
					{
						char	   *value;

						if (hv.type != jbvString)
							arg_error(op, arg, psprintf("the value of header \"%s\" must be a string", name));
						value = jbv_cstring(&hv);
						if (strpbrk(value, "\r\n") != NULL)
							arg_error(op, arg, psprintf("the value of header \"%s\" contains a line break", name));
						template_validate(value, psprintf("header \"%s\" of %s", name, what));
					}
				}
				return;
			}
		default:
			break;
	}

	/* the rest are strings */
	if (v->type != jbvString)
		arg_error(op, arg, psprintf("expected a string, not %s", jbv_type_name(v)));
	str = jbv_cstring(v);

	switch (arg->kind)
	{
		case ARG_TEMPLATE:
			template_validate(str, what);
			break;
		case ARG_URL:
			validate_url(op, arg, str, what);
			break;
		case ARG_TARGET:
			template_render_name(str, what, NULL);
			break;
		case ARG_TASK:
			orch_check_id(str, "task id");
			break;
		case ARG_CHAR:
			if (strlen(str) != 1 || IS_HIGHBIT_SET(str[0]))
				arg_error(op, arg, "it must be a single one-byte character");
			break;
		case ARG_COLUMNS:
			validate_columns(op, arg, str);
			break;
		case ARG_INTERVAL:
			{
				Interval   *iv;
				Interval	zero = {0};

				iv = DatumGetIntervalP(DirectFunctionCall3(interval_in,
														   CStringGetDatum(str),
														   ObjectIdGetDatum(InvalidOid),
														   Int32GetDatum(-1)));
				if (DatumGetInt32(DirectFunctionCall2(interval_cmp,
													  IntervalPGetDatum(iv),
													  IntervalPGetDatum(&zero))) <= 0)
					arg_error(op, arg, "it must be positive");
				break;
			}
		case ARG_TEXT:
			if (arg->choices != NULL)
			{
				bool		ok = false;
				StringInfoData list;

				initStringInfo(&list);
				for (int i = 0; arg->choices[i] != NULL; i++)
				{
					ok |= (strcmp(str, arg->choices[i]) == 0);
					appendStringInfo(&list, "%s%s", i > 0 ? ", " : "", arg->choices[i]);
				}
				if (!ok)
					ereport(ERROR,
							(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
							 errmsg("invalid %s argument of operator %s: \"%s\"",
									arg->name, op, str),
							 errhint("Use one of: %s.", list.data)));
			}
			break;
		default:
			break;
	}
}

/*
 * Checks an operator spec; raises ERROR on anything a worker could not run.
 * task_id, if not NULL, names the task in messages.
 */
void
operator_validate(Jsonb *spec, const char *task_id)
{
	const OperatorDef *def = find_operator(spec, false);
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken tok;

	/* no unknown keys */
	it = JsonbIteratorInit(&spec->root);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		char	   *key;
		bool		known = false;
		StringInfoData list;

		if (tok != WJB_KEY)
			continue;
		key = jbv_cstring(&v);
		if (strcmp(key, "operator") == 0)
			continue;
		initStringInfo(&list);
		for (const OperatorArg *arg = def->args; arg->name != NULL; arg++)
		{
			known |= (strcmp(key, arg->name) == 0);
			if (!arg->legacy)
				appendStringInfo(&list, "%s%s", arg == def->args ? "" : ", ", arg->name);
		}
		if (!known)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("operator %s has no argument \"%s\"", def->name, key),
					 errhint("Its arguments are %s.", list.data)));
	}

	for (const OperatorArg *arg = def->args; arg->name != NULL; arg++)
	{
		JsonbValue *value = jsonb_get_key(spec, arg->name);

		if (value == NULL)
		{
			if (arg->required)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("operator %s needs the argument \"%s\"", def->name, arg->name)));
			continue;
		}
		validate_arg(def->name, arg, value, task_id);
	}

	if (strcmp(def->name, "copy_into") == 0)
		validate_copy_into(spec);
}

/* the value of a text argument, or NULL if it is absent or null */
static char *
spec_text(Jsonb *spec, const char *key)
{
	JsonbValue *v = jsonb_get_key(spec, key);

	return (v != NULL && v->type == jbvString) ? jbv_cstring(v) : NULL;
}

static bool
spec_given(Jsonb *spec, const char *key)
{
	JsonbValue *v = jsonb_get_key(spec, key);

	return v != NULL && v->type != jbvNull;
}

/* What copy_into's arguments say together. */
static void
validate_copy_into(Jsonb *spec)
{
	JsonbValue *create = jsonb_get_key(spec, "create_table");
	char	   *format = spec_text(spec, "format");
	char	   *mode = spec_text(spec, "mode");
	char	   *on_error = spec_text(spec, "on_error");
	char	   *partition_by = spec_text(spec, "partition_by");
	bool		has_input = spec_given(spec, "input");
	bool		has_url = spec_given(spec, "url");
	bool		binary = (format != NULL && strcmp(format, "binary") == 0);
	bool		skip = (on_error != NULL && strcmp(on_error, "skip") == 0);
	bool		partition = (mode != NULL && strcmp(mode, "partition") == 0);
	bool		creates;

	if (spec_given(spec, "create"))
	{
		if (spec_given(spec, "create_table"))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("copy_into takes create_table or its old name create, not both")));
		create = jsonb_get_key(spec, "create");
	}
	creates = (create != NULL && create->type == jbvBool && create->val.boolean);

	if (has_input == has_url)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("copy_into needs exactly one of input and url"),
				 errhint("Use input => 'task' to load an upstream task's artifact, or url => '...' to stream a file.")));
	if (spec_given(spec, "columns") && !creates)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("copy_into takes columns only with create_table => true"),
				 errhint("columns gives the names and types of the table that create_table makes.")));
	if (binary && spec_given(spec, "delimiter"))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("copy_into cannot take a delimiter in binary format")));
	if (binary && creates && !spec_given(spec, "columns"))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("copy_into cannot infer a table from binary data"),
				 errhint("Give the columns with columns => 'name type, ...'.")));
	if (binary && skip)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("copy_into cannot skip bad rows in binary format"),
				 errhint("on_error => 'skip' works with the csv and text formats.")));
	if (spec_given(spec, "reject_limit") && !skip)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("copy_into takes reject_limit only with on_error => 'skip'"),
				 errhint("reject_limit is how many bad rows a load may set aside before it fails.")));
	if (partition && partition_by == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("copy_into with mode => 'partition' needs partition_by"),
				 errhint("partition_by names the column the target table is partitioned by range on.")));
	if (!partition && spec_given(spec, "partition_by"))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("copy_into takes partition_by only with mode => 'partition'")));
	if (partition_by != NULL &&
		(partition_by[0] == '\0' || strlen(partition_by) >= NAMEDATALEN))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid partition_by argument of operator copy_into: \"%s\" is not a column name",
						partition_by)));
}

/*
 * Checks a callback's spec: an operator, and one a callback can run (sql,
 * or http_fetch for a webhook; a callback keeps no output).
 */
void
callback_validate(Jsonb *spec, const char *what)
{
	const char *name;

	operator_validate(spec, NULL);
	name = operator_name(spec);
	if (strcmp(name, "sql") != 0 && strcmp(name, "http_fetch") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s cannot be a %s operator", what, name),
				 errhint("A callback is orchestrator.sql(...), or orchestrator.http_fetch(...) for a webhook.")));
}

/* The upstream task whose artifact the operator reads, or NULL. */
char *
operator_input_task(Jsonb *spec)
{
	JsonbValue *input = jsonb_get_key(spec, "input");

	if (input == NULL || input->type != jbvString)
		return NULL;
	return jbv_cstring(input);
}

/* The operator's name, or NULL if the spec has none. */
const char *
operator_name(Jsonb *spec)
{
	const OperatorDef *def = find_operator(spec, true);

	return def != NULL ? def->name : NULL;
}

bool
operator_is_sensor(const char *name)
{
	return name != NULL &&
		(strcmp(name, "sql_sensor") == 0 || strcmp(name, "http_sensor") == 0);
}

/*
 * Checks a task's outlets: asset names (see asset_check_name), templated,
 * no nulls.  Returns them as a list of String nodes, duplicates left out.
 */
List *
outlets_validate(ArrayType *outlets, const char *task_id)
{
	Datum	   *elems;
	bool	   *nulls;
	int			n;
	List	   *names = NIL;

	if (ARR_NDIM(outlets) > 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("outlets must be a one-dimensional array of asset names")));
	deconstruct_array(outlets, TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, &n);
	for (int i = 0; i < n; i++)
	{
		char	   *name;

		if (nulls[i])
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("outlets must not contain nulls")));
		name = TextDatumGetCString(elems[i]);
		asset_check_name(name);
		template_validate(name, psprintf("the outlet \"%s\" of task \"%s\"", name, task_id));
		if (!list_member(names, makeString(name)))
			names = lappend(names, makeString(name));
	}
	return names;
}

bool
operator_produces_artifact(const char *name)
{
	for (int i = 0; i < lengthof(operator_defs); i++)
		if (strcmp(name, operator_defs[i].name) == 0)
			return operator_defs[i].artifact;
	return false;
}

PG_FUNCTION_INFO_V1(orch_validate_operator);

/*
 * validate_operator(spec jsonb) RETURNS jsonb: the spec, if it is valid.
 * The operator constructors end with it.
 */
Datum
orch_validate_operator(PG_FUNCTION_ARGS)
{
	Jsonb	   *spec = PG_ARGISNULL(0) ? NULL : PG_GETARG_JSONB_P(0);

	operator_validate(spec, NULL);
	PG_RETURN_JSONB_P(spec);
}
