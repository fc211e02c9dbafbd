/*-------------------------------------------------------------------------
 *
 * copy.c
 *	  The copy sink: PostgreSQL's COPY engine, fed by a stream, in the
 *	  worker's own transaction.
 *
 * SPI cannot run COPY FROM STDIN, but the COPY API can (BeginCopyFrom with
 * a data source callback, CopyFrom, EndCopyFrom; as in tablesync.c).  That
 * API makes none of DoCopy's permission checks, so they are made here, as
 * the task's role: INSERT on the target (with column privileges), and a
 * table under row-level security refused, as COPY FROM refuses it.
 *
 * mode => 'replace' empties the table (TRUNCATE, which needs its
 * privilege) in the same transaction, so the old rows are replaced
 * atomically.  create => true creates a missing table: with the given
 * columns, or with column names from the CSV header and types inferred from
 * a bounded sample of the data (integers, floating point, booleans, dates,
 * timestamps, text).
 *
 * copy_data_source_cb has no user-data argument: the stream being loaded
 * is a static.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/table.h"
#include "catalog/namespace.h"
#include "commands/copy.h"
#include "commands/progress.h"
#include "executor/executor.h"
#include "executor/spi.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "parser/parse_relation.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/backend_status.h"
#include "utils/rls.h"

#include "orchestrator.h"
#include "stream.h"

/* how much of the data create => true looks at to choose column types */
#define INFER_SAMPLE_BYTES	(4 * 1024 * 1024)
#define INFER_SAMPLE_ROWS	10000

static Stream *copy_stream = NULL;

static int
copy_read_cb(void *outbuf, int minread, int maxread)
{
	int			total = 0;

	/* COPY's own count of rows so far, for the progress view */
	if (MyBEEntry != NULL)
		orch_progress_set_rows((uint64) MyBEEntry->st_progress_param[PROGRESS_COPY_TUPLES_PROCESSED]);

	while (total < minread)
	{
		size_t		n = stream_read(copy_stream, (char *) outbuf + total, maxread - total);

		if (n == 0)
			break;
		total += (int) n;
	}
	return total;
}

static char *
qualified_name(List *names)
{
	StringInfoData buf;
	ListCell   *lc;

	initStringInfo(&buf);
	foreach(lc, names)
	{
		if (buf.len > 0)
			appendStringInfoChar(&buf, '.');
		appendStringInfoString(&buf, quote_identifier(lfirst(lc)));
	}
	return buf.data;
}

/* ---- type inference for create => true ---- */

typedef enum InferredType
{
	IT_BIGINT,
	IT_DOUBLE,
	IT_BOOLEAN,
	IT_DATE,
	IT_TIMESTAMP,
	IT_TEXT,
	IT_NONE						/* only empty values seen */
} InferredType;

static const char *const inferred_type_names[] = {
	"bigint", "double precision", "boolean", "date", "timestamp", "text", "text"
};

static bool
all_digits(const char *s, int n)
{
	for (int i = 0; i < n; i++)
		if (!isdigit((unsigned char) s[i]))
			return false;
	return n > 0;
}

static bool
looks_like_date(const char *v, size_t len)
{
	return len == 10 && all_digits(v, 4) && v[4] == '-' && all_digits(v + 5, 2) &&
		v[7] == '-' && all_digits(v + 8, 2);
}

/* YYYY-MM-DD[ T]HH:MM[:SS[.fff]] without a zone */
static bool
looks_like_timestamp(const char *v, size_t len)
{
	size_t		i = 16;

	if (len < 16 || !looks_like_date(v, 10) || (v[10] != ' ' && v[10] != 'T') ||
		!all_digits(v + 11, 2) || v[13] != ':' || !all_digits(v + 14, 2))
		return false;
	if (len > 16)
	{
		if (v[16] != ':' || len < 19 || !all_digits(v + 17, 2))
			return false;
		i = 19;
		if (len > 19)
		{
			if (v[19] != '.' || !all_digits(v + 20, (int) (len - 20)))
				return false;
			i = len;
		}
	}
	return i == len;
}

static InferredType
value_type(const char *v, size_t len)
{
	char	   *end;
	char	   *copy;

	if ((len == 4 && pg_strncasecmp(v, "true", 4) == 0) ||
		(len == 5 && pg_strncasecmp(v, "false", 5) == 0))
		return IT_BOOLEAN;
	if (looks_like_timestamp(v, len))
		return IT_TIMESTAMP;
	if (looks_like_date(v, len))
		return IT_DATE;
	copy = pnstrdup(v, len);
	errno = 0;
	(void) strtoll(copy, &end, 10);
	if (len > 0 && *end == '\0' && errno == 0 && !isspace((unsigned char) copy[0]))
		return IT_BIGINT;
	errno = 0;
	(void) strtod(copy, &end);
	if (len > 0 && *end == '\0' && errno == 0 && !isspace((unsigned char) copy[0]) &&
		strpbrk(copy, "nNiI") == NULL)	/* not nan, inf */
		return IT_DOUBLE;
	return IT_TEXT;
}

static InferredType
merge_types(InferredType a, InferredType b)
{
	if (a == IT_NONE)
		return b;
	if (b == IT_NONE || a == b)
		return a;
	if ((a == IT_BIGINT && b == IT_DOUBLE) || (a == IT_DOUBLE && b == IT_BIGINT))
		return IT_DOUBLE;
	if ((a == IT_DATE && b == IT_TIMESTAMP) || (a == IT_TIMESTAMP && b == IT_DATE))
		return IT_TIMESTAMP;
	return IT_TEXT;
}

/*
 * Splits one CSV record starting at *p (quotes, doubled quotes, quoted
 * delimiters and line breaks, CRLF); returns its fields, or NIL at the end
 * of the sample.  A record cut off by the end of the sample is not used.
 */
static List *
csv_record(const char **p, const char *end, char delim, bool *complete)
{
	List	   *fields = NIL;
	StringInfoData field;
	const char *s = *p;

	*complete = false;
	if (s >= end)
		return NIL;
	initStringInfo(&field);
	for (;;)
	{
		if (s < end && *s == '"')
		{
			s++;
			for (;;)
			{
				if (s >= end)
					return NIL;
				if (*s == '"')
				{
					if (s + 1 < end && s[1] == '"')
					{
						appendStringInfoChar(&field, '"');
						s += 2;
						continue;
					}
					if (s + 1 >= end)
						return NIL;
					s++;
					break;
				}
				appendStringInfoChar(&field, *s++);
			}
		}
		while (s < end && *s != delim && *s != '\n' && *s != '\r')
			appendStringInfoChar(&field, *s++);
		fields = lappend(fields, pstrdup(field.data));
		resetStringInfo(&field);
		if (s >= end)
			return NIL;			/* no line end: possibly cut */
		if (*s == delim)
		{
			s++;
			continue;
		}
		if (*s == '\r')
			s++;
		if (s < end && *s == '\n')
			s++;
		break;
	}
	*p = s;
	*complete = true;
	return fields;
}

/* "name type, ..." for a table made from a CSV sample */
static char *
infer_columns(Stream *input, const CopyTarget *target)
{
	const char *data;
	size_t		len = stream_peek(input, &data, INFER_SAMPLE_BYTES);
	const char *p = data;
	const char *end = data + len;
	char		delim = target->delimiter ? target->delimiter[0] :
		(strcmp(target->format, "csv") == 0 ? ',' : '\t');
	bool		complete;
	List	   *header;
	InferredType *types;
	int			ncols;
	StringInfoData buf;
	int			i;
	ListCell   *lc;

	if (strcmp(target->format, "binary") == 0)
		elog(ERROR, "cannot infer columns from binary data");
	if (len == INFER_SAMPLE_BYTES)
	{
		/* a whole sample ends at a line end */
		while (end > data && end[-1] != '\n')
			end--;
	}
	header = csv_record(&p, end, delim, &complete);
	if (!complete || header == NIL)
		ereport(ERROR,
				(errcode(ERRCODE_BAD_COPY_FILE_FORMAT),
				 errmsg("cannot create table %s: the data has no header line",
						qualified_name(target->names)),
				 errhint("Give the columns with columns => 'name type, ...'.")));
	ncols = list_length(header);
	types = palloc(sizeof(InferredType) * ncols);
	for (i = 0; i < ncols; i++)
		types[i] = IT_NONE;

	for (int row = 0; row < INFER_SAMPLE_ROWS; row++)
	{
		List	   *fields = csv_record(&p, end, delim, &complete);

		if (!complete)
			break;
		i = 0;
		foreach(lc, fields)
		{
			char	   *v = lfirst(lc);

			if (i >= ncols)
				break;
			/* empty means NULL; the null string too */
			if (v[0] != '\0' && !(target->null_string && strcmp(v, target->null_string) == 0))
				types[i] = merge_types(types[i], value_type(v, strlen(v)));
			i++;
		}
	}

	initStringInfo(&buf);
	i = 0;
	foreach(lc, header)
	{
		char	   *name = lfirst(lc);

		if (name[0] == '\0')
			name = psprintf("column%d", i + 1);
		if (strlen(name) >= NAMEDATALEN)
			ereport(ERROR,
					(errcode(ERRCODE_NAME_TOO_LONG),
					 errmsg("cannot create table %s: column name \"%s\" is too long",
							qualified_name(target->names), name)));
		appendStringInfo(&buf, "%s%s %s", i > 0 ? ", " : "",
						 quote_identifier(name), inferred_type_names[types[i]]);
		i++;
	}
	return buf.data;
}

/* Runs a utility statement as the current (owner) role. */
static void
run_utility(const char *sql)
{
	int			rc;

	SPI_connect();
	rc = SPI_execute(sql, false, 0);
	if (rc < 0)
		elog(ERROR, "could not run \"%s\": %s", sql, SPI_result_code_string(rc));
	SPI_finish();
}

/* The checks DoCopy makes for COPY FROM, as the current role. */
static void
check_copy_permissions(Relation rel)
{
	RangeTblEntry *rte = makeNode(RangeTblEntry);
	TupleDesc	desc = RelationGetDescr(rel);

	rte->rtekind = RTE_RELATION;
	rte->relid = RelationGetRelid(rel);
	rte->relkind = rel->rd_rel->relkind;
	rte->rellockmode = RowExclusiveLock;
	rte->requiredPerms = ACL_INSERT;
	for (int i = 0; i < desc->natts; i++)
	{
		if (TupleDescAttr(desc, i)->attisdropped)
			continue;
		rte->insertedCols = bms_add_member(rte->insertedCols,
										   i + 1 - FirstLowInvalidHeapAttributeNumber);
	}
	ExecCheckRTPerms(list_make1(rte), true);

	if (check_enable_rls(RelationGetRelid(rel), InvalidOid, false) == RLS_ENABLED)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("copy_into cannot load table \"%s\": it has row-level security enabled",
						RelationGetRelationName(rel)),
				 errhint("COPY FROM does not apply row-level security policies; load a table without them.")));
}

uint64
copy_sink(Stream *input, const CopyTarget *target)
{
	List	   *name_nodes = NIL;
	RangeVar   *rv;
	char	   *qname = qualified_name(target->names);
	Oid			relid;
	Relation	rel;
	ParseState *pstate;
	List	   *options = NIL;
	CopyFromState cstate;
	uint64		rows;
	ListCell   *lc;

	foreach(lc, target->names)
		name_nodes = lappend(name_nodes, makeString(lfirst(lc)));
	rv = makeRangeVarFromNameList(name_nodes);
	relid = RangeVarGetRelid(rv, NoLock, true);
	if (!OidIsValid(relid))
	{
		if (!target->create)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_TABLE),
					 errmsg("target table %s does not exist", qname),
					 errhint("Create it first, or use create => true.")));
		run_utility(psprintf("CREATE TABLE %s (%s)", qname,
							 target->columns ? target->columns : infer_columns(input, target)));
	}
	else if (strcmp(target->mode, "replace") == 0)
		run_utility(psprintf("TRUNCATE TABLE %s", qname));

	rel = table_openrv(rv, RowExclusiveLock);
	check_copy_permissions(rel);

	options = lappend(options, makeDefElem("format", (Node *) makeString(pstrdup(target->format)), -1));
	if (strcmp(target->format, "binary") != 0)
		options = lappend(options, makeDefElem("header", (Node *) makeBoolean(target->header), -1));
	if (target->delimiter)
		options = lappend(options, makeDefElem("delimiter", (Node *) makeString(pstrdup(target->delimiter)), -1));
	if (target->null_string)
		options = lappend(options, makeDefElem("null", (Node *) makeString(pstrdup(target->null_string)), -1));

	pstate = make_parsestate(NULL);
	(void) addRangeTableEntryForRelation(pstate, rel, RowExclusiveLock, NULL, false, false);

	copy_stream = input;
	PG_TRY();
	{
		cstate = BeginCopyFrom(pstate, rel, NULL, NULL, false, copy_read_cb, NIL, options);
		rows = CopyFrom(cstate);
		EndCopyFrom(cstate);
	}
	PG_FINALLY();
	{
		copy_stream = NULL;
	}
	PG_END_TRY();

	table_close(rel, NoLock);
	free_parsestate(pstate);
	return rows;
}
