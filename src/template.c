/*-------------------------------------------------------------------------
 *
 * template.c
 *	  Airflow-style templates in task arguments.
 *
 * A template is text with expressions in double braces, rendered when a
 * task runs, as in Airflow:
 *
 *		yellow_taxi_{{ execution_date.strftime('%Y_%m') }}
 *
 * An expression is one of the variables below, a date variable with
 * .strftime('FORMAT') (Python's directives, including %f), params.NAME
 * (also params['NAME']), or a quoted string, followed by any number of
 * filters, as in Jinja:
 *
 *		{{ error | tojson }}					a JSON value (a string: quoted, escaped)
 *		{{ params.x | quote_literal }}			a SQL literal, as quote_literal();
 *												NULL for a JSON null
 *		{{ params.t | quote_ident }}			a SQL identifier, as quote_ident()
 *		{{ params.x | default('y') }}			'y' if x is undefined (an absent
 *												params key, a run_id, dag_id or
 *												task_id not known); default() alone
 *												gives ''; default('y', true) also
 *												replaces '', null, false, 0, [], {}
 *
 * default's first argument is itself an expression (with filters of its
 * own).  Dates render in UTC, as Airflow's do.  Jinja statements ({% %}),
 * comments ({# #}) and any other filter are not supported and are rejected
 * when the task is defined, as is any unknown variable (with a default or
 * not), so that a typo fails at definition time and not at 3 a.m.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "pgtime.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/timestamp.h"

#include "template.h"

typedef enum TemplateVar
{
	TV_TEXT,					/* literal text outside braces */
	TV_STRING,					/* a quoted string inside braces */
	TV_PARAM,					/* params.NAME */
	TV_DS,
	TV_DS_NODASH,
	TV_TS,
	TV_TS_NODASH,
	TV_TS_NODASH_WITH_TZ,
	TV_LOGICAL_DATE,
	TV_EXECUTION_DATE,
	TV_DATA_INTERVAL_START,
	TV_DATA_INTERVAL_END,
	TV_RUN_ID,
	TV_DAG_ID,
	TV_TASK_ID,
	TV_ERROR,
	TV_ITEM,					/* item, item.NAME (a mapped instance's element) */
	TV_MAP_INDEX,
	TV_ASSET_EVENTS				/* triggering_asset_events[.NAME] */
} TemplateVar;

typedef enum TemplateFilterKind
{
	TF_TOJSON,
	TF_QUOTE_LITERAL,
	TF_QUOTE_IDENT,
	TF_DEFAULT
} TemplateFilterKind;

typedef struct TemplatePart
{
	TemplateVar var;
	char	   *text;			/* TV_TEXT, TV_STRING: the text; TV_PARAM:
								 * the name */
	char	   *format;			/* strftime format, or NULL */
	List	   *filters;		/* of TemplateFilter, applied in order */
} TemplatePart;

typedef struct TemplateFilter
{
	TemplateFilterKind kind;
	TemplatePart *arg;			/* default: the value, or NULL for '' */
	bool		boolean;		/* default(..., true): falsy values too */
} TemplateFilter;

static const struct
{
	const char *name;
	TemplateFilterKind kind;
}			template_filters[] = {
	{"tojson", TF_TOJSON},
	{"quote_literal", TF_QUOTE_LITERAL},
	{"quote_ident", TF_QUOTE_IDENT},
	{"default", TF_DEFAULT},
};

#define TEMPLATE_FILTERS_HINT \
	"The filters are tojson, quote_literal, quote_ident and default('VALUE')."

/*
 * A value while an expression is evaluated: a string, another JSON value
 * (from params), or undefined, which is an error once it is used other
 * than by default().
 */
typedef struct TemplateValue
{
	bool		defined;
	char	   *str;			/* a string, or NULL */
	JsonbValue *json;			/* else a JSON value that is not a string */
	const char *name;			/* undefined: the variable */
	bool		is_param;		/* undefined: a params key */
} TemplateValue;

static const struct
{
	const char *name;
	TemplateVar var;
	bool		is_date;		/* takes .strftime() */
}			template_vars[] = {
	{"ds", TV_DS, false},
	{"ds_nodash", TV_DS_NODASH, false},
	{"ts", TV_TS, false},
	{"ts_nodash", TV_TS_NODASH, false},
	{"ts_nodash_with_tz", TV_TS_NODASH_WITH_TZ, false},
	{"logical_date", TV_LOGICAL_DATE, true},
	{"execution_date", TV_EXECUTION_DATE, true},
	{"data_interval_start", TV_DATA_INTERVAL_START, true},
	{"data_interval_end", TV_DATA_INTERVAL_END, true},
	{"run_id", TV_RUN_ID, false},
	{"dag_id", TV_DAG_ID, false},
	{"task_id", TV_TASK_ID, false},
	{"error", TV_ERROR, false},
	{"map_index", TV_MAP_INDEX, false},
};

#define TEMPLATE_VARIABLES_HINT \
	"Templates can use ds, ds_nodash, ts, ts_nodash, ts_nodash_with_tz, logical_date, execution_date, data_interval_start, data_interval_end (the last four with .strftime('FORMAT')), run_id, dag_id, task_id, params.NAME, triggering_asset_events, error (in callbacks), and item, item.NAME and map_index (in mapped tasks)."

static void template_syntax_error(const char *tmpl, const char *what,
								  const char *detail) pg_attribute_noreturn();

static void
template_syntax_error(const char *tmpl, const char *what, const char *detail)
{
	ereport(ERROR,
			(errcode(ERRCODE_SYNTAX_ERROR),
			 errmsg("invalid template in %s: %s", what, detail),
			 errdetail("The template is \"%s\".", tmpl)));
}

static const char *
skip_space(const char *p, const char *end)
{
	while (p < end && isspace((unsigned char) *p))
		p++;
	return p;
}

/* Parses a quoted string at *p (either quote); returns its contents. */
static char *
parse_string(const char **p, const char *end, const char *tmpl, const char *what)
{
	char		quote = **p;
	const char *s = *p + 1;
	StringInfoData buf;

	initStringInfo(&buf);
	while (s < end && *s != quote)
	{
		if (*s == '\\' && s + 1 < end)
			s++;
		appendStringInfoChar(&buf, *s++);
	}
	if (s >= end)
		template_syntax_error(tmpl, what, "unterminated string");
	*p = s + 1;
	return buf.data;
}

/* Parses an identifier at *p; returns NULL if there is none. */
static char *
parse_name(const char **p, const char *end)
{
	const char *start = *p;
	const char *s = start;

	if (s >= end || !(isalpha((unsigned char) *s) || *s == '_'))
		return NULL;
	while (s < end && (isalnum((unsigned char) *s) || *s == '_'))
		s++;
	*p = s;
	return pnstrdup(start, s - start);
}

/*
 * Parses a variable or a quoted string at *pp, without filters.
 */
static TemplatePart *
parse_primary(const char **pp, const char *end, const char *tmpl,
			  const char *what)
{
	TemplatePart *part = palloc0(sizeof(TemplatePart));
	const char *p = skip_space(*pp, end);
	char	   *name;
	char	   *member = NULL;
	bool		found = false;
	bool		is_date = false;

	if (p >= end)
		template_syntax_error(tmpl, what, "expected a variable or a quoted string");

	if (*p == '\'' || *p == '"')
	{
		part->var = TV_STRING;
		part->text = parse_string(&p, end, tmpl, what);
		*pp = p;
		return part;
	}

	name = parse_name(&p, end);
	if (name == NULL)
		template_syntax_error(tmpl, what,
							  psprintf("unexpected \"%.*s\"", (int) (end - p), p));

	/* .member or ['member'] */
	if (p < end && *p == '.')
	{
		p++;
		member = parse_name(&p, end);
		if (member == NULL)
			template_syntax_error(tmpl, what,
								  psprintf("expected a name after \"%s.\"", name));
	}
	else if (p < end && *p == '[')
	{
		p = skip_space(p + 1, end);
		if (p >= end || (*p != '\'' && *p != '"'))
			template_syntax_error(tmpl, what,
								  psprintf("expected a quoted name after \"%s[\"", name));
		member = parse_string(&p, end, tmpl, what);
		p = skip_space(p, end);
		if (p >= end || *p != ']')
			template_syntax_error(tmpl, what, "expected \"]\"");
		p++;
	}

	if (strcmp(name, "params") == 0)
	{
		if (member == NULL)
			template_syntax_error(tmpl, what,
								  "use params.NAME to refer to a parameter");
		part->var = TV_PARAM;
		part->text = member;
		member = NULL;
		found = true;
	}
	else if (strcmp(name, "item") == 0)
	{
		/* the element; item.NAME: a member of an object element */
		part->var = TV_ITEM;
		part->text = member;
		member = NULL;
		found = true;
	}
	else if (strcmp(name, "triggering_asset_events") == 0)
	{
		/* the whole object, or one asset's events: ['NAME'] */
		part->var = TV_ASSET_EVENTS;
		part->text = member;
		member = NULL;
		found = true;
	}
	for (int i = 0; !found && i < lengthof(template_vars); i++)
	{
		if (strcmp(name, template_vars[i].name) == 0)
		{
			part->var = template_vars[i].var;
			is_date = template_vars[i].is_date;
			found = true;
		}
	}
	if (!found)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("unknown template variable \"%s\" in %s", name, what),
				 errdetail("The template is \"%s\".", tmpl),
				 errhint(TEMPLATE_VARIABLES_HINT)));

	if (member != NULL)
	{
		if (strcmp(member, "strftime") != 0)
			template_syntax_error(tmpl, what,
								  psprintf("\"%s\" has no attribute \"%s\"", name, member));
		if (!is_date)
			template_syntax_error(tmpl, what,
								  psprintf("strftime() applies to logical_date, execution_date, data_interval_start and data_interval_end, not to \"%s\"",
										   name));
		p = skip_space(p, end);
		if (p >= end || *p != '(')
			template_syntax_error(tmpl, what, "expected \"(\" after strftime");
		p = skip_space(p + 1, end);
		if (p >= end || (*p != '\'' && *p != '"'))
			template_syntax_error(tmpl, what, "strftime() takes one quoted format");
		part->format = parse_string(&p, end, tmpl, what);
		p = skip_space(p, end);
		if (p >= end || *p != ')')
			template_syntax_error(tmpl, what, "expected \")\" after the strftime format");
		p++;
	}
	*pp = p;
	return part;
}

static TemplatePart *parse_filtered(const char **pp, const char *end,
									const char *tmpl, const char *what);

/*
 * Parses a filter at *pp, just after its "|": a name, and for default() its
 * arguments.
 */
static TemplateFilter *
parse_filter(const char **pp, const char *end, const char *tmpl,
			 const char *what)
{
	TemplateFilter *filter = palloc0(sizeof(TemplateFilter));
	const char *p = skip_space(*pp, end);
	char	   *name = parse_name(&p, end);
	bool		found = false;

	if (name == NULL)
		template_syntax_error(tmpl, what, "expected a filter name after \"|\"");
	for (int i = 0; !found && i < lengthof(template_filters); i++)
	{
		if (strcmp(name, template_filters[i].name) == 0)
		{
			filter->kind = template_filters[i].kind;
			found = true;
		}
	}
	if (!found)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_FUNCTION),
				 errmsg("unknown template filter \"%s\" in %s", name, what),
				 errdetail("The template is \"%s\".", tmpl),
				 errhint(TEMPLATE_FILTERS_HINT)));

	p = skip_space(p, end);
	if (p < end && *p == '(')
	{
		int			nargs = 0;

		p = skip_space(p + 1, end);
		if (p < end && *p == ')')
			p++;				/* no arguments */
		else
		{
			for (;;)
			{
				if (filter->kind != TF_DEFAULT)
					template_syntax_error(tmpl, what,
										  psprintf("the filter \"%s\" takes no arguments", name));
				if (nargs == 0)
					filter->arg = parse_filtered(&p, end, tmpl, what);
				else if (nargs == 1)
				{
					char	   *b = parse_name(&p, end);

					if (b != NULL && (strcmp(b, "true") == 0 || strcmp(b, "True") == 0))
						filter->boolean = true;
					else if (b != NULL && (strcmp(b, "false") == 0 || strcmp(b, "False") == 0))
						filter->boolean = false;
					else
						template_syntax_error(tmpl, what,
											  "the second argument of default() is true or false");
				}
				else
					template_syntax_error(tmpl, what,
										  "default() takes at most two arguments");
				nargs++;
				p = skip_space(p, end);
				if (p < end && *p == ',')
				{
					p = skip_space(p + 1, end);
					continue;
				}
				if (p < end && *p == ')')
				{
					p++;
					break;
				}
				template_syntax_error(tmpl, what,
									  psprintf("expected \",\" or \")\" in the arguments of %s()", name));
			}
		}
	}
	*pp = p;
	return filter;
}

/* Parses a value at *pp and the filters after it. */
static TemplatePart *
parse_filtered(const char **pp, const char *end, const char *tmpl,
			   const char *what)
{
	const char *p = *pp;
	TemplatePart *part = parse_primary(&p, end, tmpl, what);

	for (;;)
	{
		p = skip_space(p, end);
		if (p >= end || *p != '|')
			break;
		p++;
		part->filters = lappend(part->filters,
								parse_filter(&p, end, tmpl, what));
	}
	*pp = p;
	return part;
}

/*
 * Parses the expression between "{{" and "}}" (start..end).
 */
static TemplatePart *
parse_expression(const char *start, const char *end, const char *tmpl,
				 const char *what)
{
	const char *p = skip_space(start, end);
	TemplatePart *part;

	if (p >= end)
		template_syntax_error(tmpl, what, "empty expression \"{{ }}\"");
	part = parse_filtered(&p, end, tmpl, what);
	p = skip_space(p, end);
	if (p < end)
		template_syntax_error(tmpl, what,
							  psprintf("unexpected \"%.*s\"", (int) (end - p), p));
	return part;
}

/*
 * The end of an expression that starts at p (just after "{{"): its "}}",
 * skipping quoted strings, or the string's end if there is none.
 */
static const char *
expression_end(const char *p)
{
	while (*p != '\0' && !(p[0] == '}' && p[1] == '}'))
	{
		if (*p == '\'' || *p == '"')
		{
			char		quote = *p++;

			while (*p != '\0' && *p != quote)
				p += (*p == '\\' && p[1] != '\0') ? 2 : 1;
			if (*p == '\0')
				break;
		}
		p++;
	}
	return p;
}

/*
 * Splits a template into parts.
 */
static List *
template_parse(const char *tmpl, const char *what)
{
	List	   *parts = NIL;
	const char *p = tmpl;
	const char *text = tmpl;

	while (*p != '\0')
	{
		const char *expr;

		if (p[0] != '{' || (p[1] != '{' && p[1] != '%' && p[1] != '#'))
		{
			p++;
			continue;
		}
		if (p[1] == '%')
			template_syntax_error(tmpl, what, "statements (\"{% %}\") are not supported");
		if (p[1] == '#')
			template_syntax_error(tmpl, what, "comments (\"{# #}\") are not supported");

		if (p > text)
		{
			TemplatePart *part = palloc0(sizeof(TemplatePart));

			part->var = TV_TEXT;
			part->text = pnstrdup(text, p - text);
			parts = lappend(parts, part);
		}

		expr = p + 2;
		p = expression_end(expr);
		if (*p == '\0')
			template_syntax_error(tmpl, what, "\"{{\" without a closing \"}}\"");
		parts = lappend(parts, parse_expression(expr, p, tmpl, what));
		p += 2;
		text = p;
	}
	if (p > text)
	{
		TemplatePart *part = palloc0(sizeof(TemplatePart));

		part->var = TV_TEXT;
		part->text = pnstrdup(text, p - text);
		parts = lappend(parts, part);
	}
	return parts;
}

void
template_validate(const char *tmpl, const char *what)
{
	list_free_deep(template_parse(tmpl, what));
}

/* The UTC broken-down time of a timestamp, in POSIX struct tm terms. */
static void
utc_tm(TimestampTz ts, struct pg_tm *tm, fsec_t *fsec)
{
	if (TIMESTAMP_NOT_FINITE(ts) ||
		timestamp2tm(ts, NULL, tm, fsec, NULL, NULL) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE),
				 errmsg("timestamp out of range for a template")));
	tm->tm_wday = j2day(date2j(tm->tm_year, tm->tm_mon, tm->tm_mday));
	tm->tm_yday = date2j(tm->tm_year, tm->tm_mon, tm->tm_mday) -
		date2j(tm->tm_year, 1, 1);
	tm->tm_year -= 1900;
	tm->tm_mon -= 1;
	tm->tm_isdst = 0;
	tm->tm_gmtoff = 0;
	tm->tm_zone = "UTC";
}

/* Python's strftime: the C directives plus %f (microseconds). */
static void
append_strftime(StringInfo out, TimestampTz ts, const char *format)
{
	struct pg_tm tm;
	fsec_t		fsec;
	StringInfoData fmt;
	size_t		size;

	utc_tm(ts, &tm, &fsec);
	initStringInfo(&fmt);
	for (const char *f = format; *f != '\0'; f++)
	{
		if (f[0] == '%' && f[1] == 'f')
		{
			appendStringInfo(&fmt, "%06d", (int) fsec);
			f++;
		}
		else if (f[0] == '%' && f[1] != '\0')
		{
			appendStringInfoChar(&fmt, *f++);
			appendStringInfoChar(&fmt, *f);
		}
		else
			appendStringInfoChar(&fmt, *f);
	}
	if (fmt.len == 0)
		return;
	for (size = 128;; size *= 2)
	{
		char	   *buf = palloc(size);
		size_t		len = pg_strftime(buf, size, fmt.data, &tm);

		if (len > 0 || size >= 65536)
		{
			appendBinaryStringInfo(out, buf, len);
			pfree(buf);
			break;
		}
		pfree(buf);
	}
	pfree(fmt.data);
}

/* Python's datetime.isoformat() in UTC, as Airflow renders dates. */
static void
append_isoformat(StringInfo out, TimestampTz ts)
{
	struct pg_tm tm;
	fsec_t		fsec;

	utc_tm(ts, &tm, &fsec);
	appendStringInfo(out, "%04d-%02d-%02dT%02d:%02d:%02d",
					 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
					 tm.tm_hour, tm.tm_min, tm.tm_sec);
	if (fsec != 0)
		appendStringInfo(out, ".%06d", (int) fsec);
	appendStringInfoString(out, "+00:00");
}

static void raise_undefined(const TemplateValue *v, const char *what) pg_attribute_noreturn();

static void
raise_undefined(const TemplateValue *v, const char *what)
{
	if (v->is_param)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("parameter \"%s\" used in %s is not defined", v->name, what),
				 errhint("Give it a value in the DAG's params.")));
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("template variable \"%s\" in %s has no value here", v->name, what)));
}

static TemplateValue
string_value(char *str)
{
	TemplateValue v;

	memset(&v, 0, sizeof(v));
	v.defined = true;
	v.str = str;
	return v;
}

static TemplateValue
context_value(const char *value, const char *name)
{
	TemplateValue v;

	if (value != NULL)
		return string_value(pstrdup(value));
	memset(&v, 0, sizeof(v));
	v.name = name;
	return v;
}

/*
 * A mapped instance's element, or one of its members: a string as its
 * text, other JSON as JSON; undefined outside a mapped instance, or for a
 * member the element does not have.
 */
static TemplateValue
item_value(const TemplateContext *ctx, const char *member)
{
	TemplateValue v;
	JsonbValue	key;
	JsonbValue *value = NULL;
	JsonbValue	whole;

	memset(&v, 0, sizeof(v));
	v.name = member ? psprintf("item.%s", member) : "item";
	if (!ctx->mapped || ctx->item == NULL)
		return v;
	if (member == NULL)
	{
		if (JB_ROOT_IS_SCALAR(ctx->item))
		{
			if (!JsonbExtractScalar(&ctx->item->root, &whole))
				return v;
			value = palloc(sizeof(JsonbValue));
			*value = whole;
		}
		else
		{
			value = palloc(sizeof(JsonbValue));
			value->type = jbvBinary;
			value->val.binary.data = &ctx->item->root;
			value->val.binary.len = VARSIZE(ctx->item) - VARHDRSZ;
		}
	}
	else if (JB_ROOT_IS_OBJECT(ctx->item))
	{
		key.type = jbvString;
		key.val.string.val = (char *) member;
		key.val.string.len = strlen(member);
		value = findJsonbValueFromContainer(&ctx->item->root, JB_FOBJECT, &key);
	}
	if (value == NULL)
		return v;
	if (value->type == jbvString)
		return string_value(pnstrdup(value->val.string.val, value->val.string.len));
	v.defined = true;
	v.json = value;
	return v;
}

/*
 * triggering_asset_events: an asset-triggered run's events by asset, as a
 * JSON object ({} for another run); with a name, that asset's events, a
 * JSON array, or undefined.
 */
static TemplateValue
asset_events_value(Jsonb *events, const char *name)
{
	TemplateValue v;
	JsonbValue	key;
	JsonbValue *value;

	memset(&v, 0, sizeof(v));
	if (events == NULL)
		events = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum("{}")));
	if (name == NULL)
	{
		value = palloc0(sizeof(JsonbValue));
		value->type = jbvBinary;
		value->val.binary.data = &events->root;
		value->val.binary.len = VARSIZE(events) - VARHDRSZ;
		v.defined = true;
		v.json = value;
		return v;
	}
	key.type = jbvString;
	key.val.string.val = (char *) name;
	key.val.string.len = strlen(name);
	value = findJsonbValueFromContainer(&events->root, JB_FOBJECT, &key);
	if (value == NULL)
	{
		v.name = psprintf("triggering_asset_events['%s']", name);
		return v;
	}
	v.defined = true;
	v.json = value;
	return v;
}

static TemplateValue
param_value(Jsonb *params, const char *name)
{
	TemplateValue v;
	JsonbValue	key;
	JsonbValue *value = NULL;

	memset(&v, 0, sizeof(v));
	if (params != NULL && JB_ROOT_IS_OBJECT(params))
	{
		key.type = jbvString;
		key.val.string.val = (char *) name;
		key.val.string.len = strlen(name);
		value = findJsonbValueFromContainer(&params->root, JB_FOBJECT, &key);
	}
	if (value == NULL)
	{
		v.name = name;
		v.is_param = true;
		return v;
	}
	if (value->type == jbvString)
		return string_value(pnstrdup(value->val.string.val, value->val.string.len));
	v.defined = true;
	v.json = value;
	return v;
}

/* A value as text: JSON null is empty, numbers and booleans as in JSON. */
static char *
value_text(const TemplateValue *v, const char *what)
{
	if (!v->defined)
		raise_undefined(v, what);
	if (v->str != NULL)
		return v->str;
	switch (v->json->type)
	{
		case jbvNull:
			return "";
		case jbvNumeric:
			return DatumGetCString(DirectFunctionCall1(numeric_out,
													   NumericGetDatum(v->json->val.numeric)));
		case jbvBool:
			return v->json->val.boolean ? "true" : "false";
		default:
			/* arrays and objects render as JSON */
			return JsonbToCString(NULL, v->json->val.binary.data,
								  v->json->val.binary.len);
	}
}

/* Python's truth, for default(..., true). */
static bool
value_is_false(const TemplateValue *v)
{
	if (!v->defined)
		return true;
	if (v->str != NULL)
		return v->str[0] == '\0';
	switch (v->json->type)
	{
		case jbvNull:
			return true;
		case jbvBool:
			return !v->json->val.boolean;
		case jbvNumeric:
			return DatumGetInt32(DirectFunctionCall1(numeric_int4,
													 DirectFunctionCall1(numeric_sign,
																		 NumericGetDatum(v->json->val.numeric)))) == 0;
		case jbvBinary:
			return JsonContainerSize(v->json->val.binary.data) == 0;
		default:
			return false;
	}
}

static TemplateValue eval_expression(const TemplatePart *part, const char *what,
									 const TemplateContext *ctx);

static TemplateValue
apply_filter(const TemplateFilter *filter, TemplateValue v, const char *what,
			 const TemplateContext *ctx)
{
	StringInfoData buf;

	switch (filter->kind)
	{
		case TF_DEFAULT:
			if (v.defined && !(filter->boolean && value_is_false(&v)))
				return v;
			if (filter->arg == NULL)
				return string_value("");
			return eval_expression(filter->arg, what, ctx);
		case TF_TOJSON:
			if (v.defined && v.str == NULL && v.json->type == jbvNull)
				return string_value("null");
			if (v.defined && v.str == NULL)
				return string_value(value_text(&v, what));
			initStringInfo(&buf);
			escape_json(&buf, value_text(&v, what));
			return string_value(buf.data);
		case TF_QUOTE_LITERAL:
			/* as format('%L'): a JSON null is NULL */
			if (v.defined && v.str == NULL && v.json->type == jbvNull)
				return string_value("NULL");
			return string_value(quote_literal_cstr(value_text(&v, what)));
		case TF_QUOTE_IDENT:
			return string_value(pstrdup(quote_identifier(value_text(&v, what))));
	}
	return v;					/* not reached */
}

/* The value of an expression: a variable or string, then its filters. */
static TemplateValue
eval_expression(const TemplatePart *part, const char *what,
				const TemplateContext *ctx)
{
	TemplateValue v;
	TimestampTz date = ctx->logical_date;
	StringInfoData buf;
	struct pg_tm tm;
	fsec_t		fsec;
	ListCell   *lc;

	initStringInfo(&buf);
	switch (part->var)
	{
		case TV_TEXT:
		case TV_STRING:
			v = string_value(part->text);
			break;
		case TV_PARAM:
			v = param_value(ctx->params, part->text);
			break;
		case TV_RUN_ID:
			v = context_value(ctx->run_id, "run_id");
			break;
		case TV_DAG_ID:
			v = context_value(ctx->dag_id, "dag_id");
			break;
		case TV_TASK_ID:
			v = context_value(ctx->task_id, "task_id");
			break;
		case TV_ITEM:
			v = item_value(ctx, part->text);
			break;
		case TV_MAP_INDEX:
			v = ctx->mapped ? string_value(psprintf("%d", ctx->map_index)) :
				context_value(NULL, "map_index");
			break;
		case TV_ASSET_EVENTS:
			v = asset_events_value(ctx->asset_events, part->text);
			break;
		case TV_ERROR:
			/* empty outside a failure */
			v = string_value(ctx->error ? pstrdup(ctx->error) : "");
			break;
		case TV_DS:
		case TV_DS_NODASH:
			utc_tm(ctx->logical_date, &tm, &fsec);
			appendStringInfo(&buf,
							 part->var == TV_DS ? "%04d-%02d-%02d" : "%04d%02d%02d",
							 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday);
			v = string_value(buf.data);
			break;
		case TV_TS:
			append_isoformat(&buf, ctx->logical_date);
			v = string_value(buf.data);
			break;
		case TV_TS_NODASH:
			append_strftime(&buf, ctx->logical_date, "%Y%m%dT%H%M%S");
			v = string_value(buf.data);
			break;
		case TV_TS_NODASH_WITH_TZ:
			append_strftime(&buf, ctx->logical_date, "%Y%m%dT%H%M%S+0000");
			v = string_value(buf.data);
			break;
		case TV_DATA_INTERVAL_START:
		case TV_DATA_INTERVAL_END:
		case TV_LOGICAL_DATE:
		case TV_EXECUTION_DATE:
			if (part->var == TV_DATA_INTERVAL_START)
				date = ctx->data_interval_start;
			else if (part->var == TV_DATA_INTERVAL_END)
				date = ctx->data_interval_end;
			if (part->format != NULL)
				append_strftime(&buf, date, part->format);
			else
				append_isoformat(&buf, date);
			v = string_value(buf.data);
			break;
		default:
			elog(ERROR, "unexpected template part %d", (int) part->var);
	}

	foreach(lc, part->filters)
		v = apply_filter(lfirst(lc), v, what, ctx);
	return v;
}

char *
template_render(const char *tmpl, const char *what, const TemplateContext *ctx)
{
	StringInfoData out;
	List	   *parts = template_parse(tmpl, what);
	ListCell   *lc;

	initStringInfo(&out);
	foreach(lc, parts)
	{
		TemplatePart *part = lfirst(lc);
		TemplateValue v;

		if (part->var == TV_TEXT)
		{
			appendStringInfoString(&out, part->text);
			continue;
		}
		v = eval_expression(part, what, ctx);
		appendStringInfoString(&out, value_text(&v, what));
	}
	list_free_deep(parts);
	return out.data;
}

static void
invalid_name(const char *tmpl, const char *what, const char *detail) pg_attribute_noreturn();

static void
invalid_name(const char *tmpl, const char *what, const char *detail)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_NAME),
			 errmsg("invalid table name \"%s\" in %s", tmpl, what),
			 errdetail("%s", detail),
			 errhint("Write a table name as in SQL (schema.table); double-quote identifiers with other characters.")));
}

List *
template_render_name(const char *tmpl, const char *what,
					 const TemplateContext *ctx)
{
	List	   *templates = NIL;
	List	   *names = NIL;
	StringInfoData part;
	const char *p = tmpl;
	ListCell   *lc;

	/* split on dots outside braces and quotes; fold unquoted text */
	initStringInfo(&part);
	for (;;)
	{
		if (*p == '\0' || *p == '.')
		{
			if (part.len == 0)
				invalid_name(tmpl, what, "It has an empty identifier.");
			templates = lappend(templates, part.data);
			if (*p == '\0')
				break;
			initStringInfo(&part);
			p++;
		}
		else if (p[0] == '{' && p[1] == '{')
		{
			const char *close = expression_end(p + 2);

			if (*close == '\0')
				template_syntax_error(tmpl, what, "\"{{\" without a closing \"}}\"");
			appendBinaryStringInfo(&part, p, close + 2 - p);
			p = close + 2;
		}
		else if (*p == '"')
		{
			for (p++;; p++)
			{
				if (*p == '\0')
					invalid_name(tmpl, what, "It has an unterminated quoted identifier.");
				if (*p == '"' && p[1] != '"')
					break;
				if (*p == '"')
					p++;
				appendStringInfoChar(&part, *p);
			}
			p++;
		}
		else if (isalnum((unsigned char) *p) || *p == '_' || *p == '$' ||
				 IS_HIGHBIT_SET(*p))
			appendStringInfoChar(&part, pg_ascii_tolower((unsigned char) *p++));
		else
			invalid_name(tmpl, what,
						 psprintf("The character \"%c\" needs double quotes.", *p));
	}
	if (list_length(templates) > 3)
		invalid_name(tmpl, what, "It has more than three dotted parts.");

	foreach(lc, templates)
	{
		char	   *name;

		if (ctx == NULL)
		{
			template_validate(lfirst(lc), what);
			continue;
		}
		name = template_render(lfirst(lc), what, ctx);
		if (name[0] == '\0')
			invalid_name(tmpl, what, "An identifier renders as an empty string.");
		if (strlen(name) >= NAMEDATALEN)
			invalid_name(tmpl, what,
						 psprintf("The identifier \"%s\" is longer than %d bytes.",
								  name, NAMEDATALEN - 1));
		names = lappend(names, name);
	}
	list_free_deep(templates);
	return names;
}

/*
 * The context for render() and render_table(): (template, logical_date,
 * params, data_interval_end, dag_id, task_id, run_id).
 */
static void
context_from_args(FunctionCallInfo fcinfo, TemplateContext *ctx)
{
	memset(ctx, 0, sizeof(*ctx));
	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("logical_date must not be null")));
	ctx->logical_date = PG_GETARG_TIMESTAMPTZ(1);
	ctx->data_interval_start = ctx->logical_date;
	ctx->data_interval_end = PG_ARGISNULL(3) ? ctx->logical_date :
		PG_GETARG_TIMESTAMPTZ(3);
	ctx->params = PG_ARGISNULL(2) ? NULL : PG_GETARG_JSONB_P(2);
	ctx->dag_id = PG_ARGISNULL(4) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(4));
	ctx->task_id = PG_ARGISNULL(5) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(5));
	if (!PG_ARGISNULL(6))
		ctx->run_id = text_to_cstring(PG_GETARG_TEXT_PP(6));
	else
	{
		/* Airflow's id for a manual run */
		StringInfoData buf;

		initStringInfo(&buf);
		appendStringInfoString(&buf, "manual__");
		append_isoformat(&buf, ctx->logical_date);
		ctx->run_id = buf.data;
	}
}

PG_FUNCTION_INFO_V1(orch_render);

Datum
orch_render(PG_FUNCTION_ARGS)
{
	TemplateContext ctx;

	if (PG_ARGISNULL(0))
		PG_RETURN_NULL();
	context_from_args(fcinfo, &ctx);
	PG_RETURN_TEXT_P(cstring_to_text(template_render(text_to_cstring(PG_GETARG_TEXT_PP(0)),
													 "the template argument", &ctx)));
}

PG_FUNCTION_INFO_V1(orch_render_table);

/* The table a templated target names, quoted for SQL. */
Datum
orch_render_table(PG_FUNCTION_ARGS)
{
	TemplateContext ctx;
	List	   *names;
	StringInfoData buf;
	ListCell   *lc;

	if (PG_ARGISNULL(0))
		PG_RETURN_NULL();
	context_from_args(fcinfo, &ctx);
	names = template_render_name(text_to_cstring(PG_GETARG_TEXT_PP(0)),
								 "the target argument", &ctx);
	initStringInfo(&buf);
	foreach(lc, names)
	{
		if (buf.len > 0)
			appendStringInfoChar(&buf, '.');
		appendStringInfoString(&buf, quote_identifier(lfirst(lc)));
	}
	PG_RETURN_TEXT_P(cstring_to_text(buf.data));
}
