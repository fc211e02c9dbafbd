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
 * (also params['NAME']), or a quoted string.  Dates render in UTC, as
 * Airflow's do.  Jinja statements ({% %}), comments ({# #}) and filters
 * are not supported and are rejected when the task is defined, as is any
 * unknown variable, so that a typo fails at definition time and not at
 * 3 a.m.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "pgtime.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
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
	TV_ERROR
} TemplateVar;

typedef struct TemplatePart
{
	TemplateVar var;
	char	   *text;			/* TV_TEXT, TV_STRING: the text; TV_PARAM:
								 * the name */
	char	   *format;			/* strftime format, or NULL */
} TemplatePart;

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
};

#define TEMPLATE_VARIABLES_HINT \
	"Templates can use ds, ds_nodash, ts, ts_nodash, ts_nodash_with_tz, logical_date, execution_date, data_interval_start, data_interval_end (the last four with .strftime('FORMAT')), run_id, dag_id, task_id, params.NAME, and error (in callbacks)."

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
 * Parses the expression between "{{" and "}}" (start..end).
 */
static TemplatePart *
parse_expression(const char *start, const char *end, const char *tmpl,
				 const char *what)
{
	TemplatePart *part = palloc0(sizeof(TemplatePart));
	const char *p = skip_space(start, end);
	char	   *name;
	char	   *member = NULL;
	bool		found = false;
	bool		is_date = false;

	if (p >= end)
		template_syntax_error(tmpl, what, "empty expression \"{{ }}\"");

	if (*p == '\'' || *p == '"')
	{
		part->var = TV_STRING;
		part->text = parse_string(&p, end, tmpl, what);
	}
	else
	{
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
	}

	p = skip_space(p, end);
	if (p < end)
	{
		if (*p == '|')
			template_syntax_error(tmpl, what, "filters (\"|\") are not supported");
		template_syntax_error(tmpl, what,
							  psprintf("unexpected \"%.*s\"", (int) (end - p), p));
	}
	return part;
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

		/* find the closing braces, skipping quoted strings */
		expr = p + 2;
		p = expr;
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

static void
append_context_string(StringInfo out, const char *value, const char *name,
					  const char *what)
{
	if (value == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("template variable \"%s\" in %s has no value here", name, what)));
	appendStringInfoString(out, value);
}

static void
append_param(StringInfo out, Jsonb *params, const char *name, const char *what)
{
	JsonbValue	key;
	JsonbValue *value = NULL;

	if (params != NULL && JB_ROOT_IS_OBJECT(params))
	{
		key.type = jbvString;
		key.val.string.val = (char *) name;
		key.val.string.len = strlen(name);
		value = findJsonbValueFromContainer(&params->root, JB_FOBJECT, &key);
	}
	if (value == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("parameter \"%s\" used in %s is not defined", name, what),
				 errhint("Give it a value in the DAG's params.")));

	switch (value->type)
	{
		case jbvNull:
			break;
		case jbvString:
			appendBinaryStringInfo(out, value->val.string.val, value->val.string.len);
			break;
		case jbvNumeric:
			appendStringInfoString(out,
								   DatumGetCString(DirectFunctionCall1(numeric_out,
																	   NumericGetDatum(value->val.numeric))));
			break;
		case jbvBool:
			appendStringInfoString(out, value->val.boolean ? "true" : "false");
			break;
		default:
			/* arrays and objects render as JSON */
			appendStringInfoString(out, JsonbToCString(NULL, value->val.binary.data,
													   value->val.binary.len));
			break;
	}
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
		TimestampTz date = ctx->logical_date;
		struct pg_tm tm;
		fsec_t		fsec;

		switch (part->var)
		{
			case TV_TEXT:
			case TV_STRING:
				appendStringInfoString(&out, part->text);
				continue;
			case TV_PARAM:
				append_param(&out, ctx->params, part->text, what);
				continue;
			case TV_RUN_ID:
				append_context_string(&out, ctx->run_id, "run_id", what);
				continue;
			case TV_DAG_ID:
				append_context_string(&out, ctx->dag_id, "dag_id", what);
				continue;
			case TV_TASK_ID:
				append_context_string(&out, ctx->task_id, "task_id", what);
				continue;
			case TV_ERROR:
				/* empty outside a failure */
				if (ctx->error)
					appendStringInfoString(&out, ctx->error);
				continue;
			case TV_DS:
			case TV_DS_NODASH:
				utc_tm(ctx->logical_date, &tm, &fsec);
				appendStringInfo(&out,
								 part->var == TV_DS ? "%04d-%02d-%02d" : "%04d%02d%02d",
								 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday);
				continue;
			case TV_TS:
				append_isoformat(&out, ctx->logical_date);
				continue;
			case TV_TS_NODASH:
				append_strftime(&out, ctx->logical_date, "%Y%m%dT%H%M%S");
				continue;
			case TV_TS_NODASH_WITH_TZ:
				append_strftime(&out, ctx->logical_date, "%Y%m%dT%H%M%S+0000");
				continue;
			case TV_DATA_INTERVAL_START:
				date = ctx->data_interval_start;
				break;
			case TV_DATA_INTERVAL_END:
				date = ctx->data_interval_end;
				break;
			case TV_LOGICAL_DATE:
			case TV_EXECUTION_DATE:
				break;
		}
		if (part->format != NULL)
			append_strftime(&out, date, part->format);
		else
			append_isoformat(&out, date);
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
			const char *close = strstr(p, "}}");

			if (close == NULL)
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
