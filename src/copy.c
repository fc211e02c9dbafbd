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
 * atomically.  create_table => true creates a missing table: with the given
 * columns, or with column names from the CSV header and types inferred from
 * a bounded sample of the data (integers, floating point, booleans, dates,
 * timestamps, text).
 *
 * mode => 'partition' loads the run's data interval [data_interval_start,
 * data_interval_end) into the partition of a table partitioned by range on
 * partition_by that covers exactly that interval, in the task's
 * transaction, without taking any lock that would block the readers of the
 * other partitions.  PostgreSQL 15's DETACH PARTITION locks the parent
 * against every reader (ACCESS EXCLUSIVE; CONCURRENTLY cannot run in a
 * transaction), and so do CREATE TABLE ... PARTITION OF and DROP TABLE of a
 * partition.  ATTACH PARTITION does not (SHARE UPDATE EXCLUSIVE).  So:
 *
 * - a partition that is missing is loaded as a table of its own, created
 *	 LIKE the parent with a CHECK constraint that implies the partition's
 *	 bound (so that ATTACH need not scan it), then attached, and the CHECK
 *	 dropped;
 * - a partition that is there is emptied (TRUNCATE, ACCESS EXCLUSIVE on
 *	 that partition alone, until the commit) and loaded: its readers wait
 *	 for the new rows, those of the other partitions never wait.
 *
 * Rows outside the interval break the partition's bound: they are rejects,
 * or fail the load with on_error => 'stop'.  A partition that overlaps the
 * interval without covering exactly it, and a default partition (which
 * ATTACH locks and scans), are refused.  All of it runs as the DAG's owner,
 * who must own the parent to create a partition, and may TRUNCATE the one
 * that is there to replace it.
 *
 * on_error => 'skip' loads through copy_skip.c instead of CopyFrom.
 *
 * copy_data_source_cb has no user-data argument: the stream being loaded
 * is a static.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/table.h"
#include "catalog/namespace.h"
#include "catalog/partition.h"
#include "catalog/pg_class.h"
#include "catalog/pg_type.h"
#include "commands/copy.h"
#include "commands/progress.h"
#include "executor/executor.h"
#include "executor/spi.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "parser/parse_relation.h"
#include "partitioning/partdesc.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/date.h"
#include "utils/datetime.h"
#include "utils/partcache.h"
#include "utils/syscache.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/backend_status.h"
#include "utils/rls.h"

#include "copy_skip.h"
#include "cron.h"
#include "orchestrator.h"
#include "stream.h"

/* how much of the data create_table => true looks at to choose column types */
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

/* ---- type inference for create_table => true ---- */

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

/* ---- mode => 'partition' ---- */

/* the partition of the run's interval: found, or to be made */
typedef struct PartitionLoad
{
	Oid			parent;
	char	   *parent_name;	/* qualified and quoted */
	char	   *column;			/* partition_by, quoted */
	Oid			typid;			/* timestamp, timestamptz or date */
	int64		lower;			/* the interval, in the type's units */
	int64		upper;
	char	   *lower_literal;	/* as SQL literals of the type */
	char	   *upper_literal;
	char	   *interval_text;	/* "[lower, upper)" */
	char	   *name;			/* the partition, qualified and quoted */
	bool		attach;			/* a new table, to attach once loaded */
} PartitionLoad;

static const char *
type_sql_name(Oid typid)
{
	return typid == DATEOID ? "pg_catalog.date" :
		typid == TIMESTAMPOID ? "pg_catalog.timestamp" : "pg_catalog.timestamptz";
}

/* A timestamp's broken-down time: in tz, or UTC if tz is NULL. */
static void
to_tm(TimestampTz t, pg_tz *tz, struct pg_tm *tm, fsec_t *fsec)
{
	int			tzoff;

	if (timestamp2tm(t, tz ? &tzoff : NULL, tm, fsec, NULL, tz) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE),
				 errmsg("timestamp out of range")));
}

/* ISO 8601, which every DateStyle reads back the same */
static char *
iso_text(struct pg_tm *tm, fsec_t fsec, bool with_time, const char *zone)
{
	if (!with_time)
		return psprintf("%04d-%02d-%02d", tm->tm_year, tm->tm_mon, tm->tm_mday);
	if (fsec != 0)
		return psprintf("%04d-%02d-%02d %02d:%02d:%02d.%06d%s", tm->tm_year, tm->tm_mon,
						tm->tm_mday, tm->tm_hour, tm->tm_min, tm->tm_sec, (int) fsec, zone);
	return psprintf("%04d-%02d-%02d %02d:%02d:%02d%s", tm->tm_year, tm->tm_mon,
					tm->tm_mday, tm->tm_hour, tm->tm_min, tm->tm_sec, zone);
}

/*
 * One end of the run's interval in the key's type: the instant itself for
 * timestamptz, the DAG's wall-clock time for timestamp, its day for date.
 */
static int64
interval_end_value(TimestampTz t, Oid typid, pg_tz *tz, char **literal, char **text)
{
	struct pg_tm tm;
	fsec_t		fsec;
	Timestamp	local;

	if (typid == TIMESTAMPTZOID)
	{
		to_tm(t, NULL, &tm, &fsec);
		*literal = iso_text(&tm, fsec, true, "+00");
		*text = pstrdup(*literal);
		return t;
	}
	to_tm(t, tz, &tm, &fsec);
	if (typid == TIMESTAMPOID)
	{
		if (tm2timestamp(&tm, fsec, NULL, &local) != 0)
			ereport(ERROR,
					(errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE),
					 errmsg("timestamp out of range")));
		*literal = iso_text(&tm, fsec, true, "");
		*text = pstrdup(*literal);
		return local;
	}
	if (tm.tm_hour != 0 || tm.tm_min != 0 || tm.tm_sec != 0 || fsec != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("the run's data interval does not fall on whole days, so it cannot be a partition of a date column"),
				 errdetail("It starts or ends at %s in time zone %s.",
						   iso_text(&tm, fsec, true, ""), pg_get_timezone_name(tz)),
				 errhint("Schedule the DAG at midnight, or partition by a timestamp column.")));
	*literal = iso_text(&tm, 0, false, "");
	*text = pstrdup(*literal);
	return date2j(tm.tm_year, tm.tm_mon, tm.tm_mday) - POSTGRES_EPOCH_JDATE;
}

/* the name's suffix: the month, the day or the hour the interval starts */
static char *
partition_suffix(CopyTarget *target, pg_tz *tz)
{
	struct pg_tm lo,
				hi;
	fsec_t		lofs,
				hifs;
	bool		lo_midnight,
				hi_midnight;

	to_tm(target->interval_start, tz, &lo, &lofs);
	to_tm(target->interval_end, tz, &hi, &hifs);
	lo_midnight = lo.tm_hour == 0 && lo.tm_min == 0 && lo.tm_sec == 0 && lofs == 0;
	hi_midnight = hi.tm_hour == 0 && hi.tm_min == 0 && hi.tm_sec == 0 && hifs == 0;
	if (lo_midnight && hi_midnight && lo.tm_mday == 1 && hi.tm_mday == 1 &&
		hi.tm_year * 12 + hi.tm_mon == lo.tm_year * 12 + lo.tm_mon + 1)
		return psprintf("%04d_%02d", lo.tm_year, lo.tm_mon);
	if (lo_midnight && hi_midnight)
		return psprintf("%04d_%02d_%02d", lo.tm_year, lo.tm_mon, lo.tm_mday);
	if (lo.tm_min == 0 && lo.tm_sec == 0 && lofs == 0)
		return psprintf("%04d_%02d_%02d_%02d", lo.tm_year, lo.tm_mon, lo.tm_mday, lo.tm_hour);
	return psprintf("%04d_%02d_%02d_%02d%02d%02d", lo.tm_year, lo.tm_mon, lo.tm_mday,
					lo.tm_hour, lo.tm_min, lo.tm_sec);
}

/* a range partition's bound, in the key's units; MINVALUE and MAXVALUE at the ends */
static int64
bound_value(PartitionRangeDatum *prd, Oid typid, char **text)
{
	Const	   *c;
	Oid			typoutput;
	bool		varlena;

	if (prd->kind == PARTITION_RANGE_DATUM_MINVALUE)
	{
		*text = "MINVALUE";
		return PG_INT64_MIN;
	}
	if (prd->kind == PARTITION_RANGE_DATUM_MAXVALUE)
	{
		*text = "MAXVALUE";
		return PG_INT64_MAX;
	}
	c = castNode(Const, prd->value);
	getTypeOutputInfo(typid, &typoutput, &varlena);
	*text = OidOutputFunctionCall(typoutput, c->constvalue);
	return typid == DATEOID ? (int64) DatumGetDateADT(c->constvalue) : DatumGetInt64(c->constvalue);
}

/*
 * The partition of exactly the run's interval, if the parent has one;
 * InvalidOid if none overlaps it; an error if one overlaps it otherwise.
 */
static Oid
find_interval_partition(Relation parent, PartitionLoad *pl)
{
	PartitionDesc pd = RelationGetPartitionDesc(parent, true);

	for (int i = 0; i < pd->nparts; i++)
	{
		HeapTuple	tuple = SearchSysCache1(RELOID, ObjectIdGetDatum(pd->oids[i]));
		Datum		d;
		bool		isnull;
		PartitionBoundSpec *spec;
		int64		lo,
					hi;
		char	   *lo_text,
				   *hi_text;

		if (!HeapTupleIsValid(tuple))
			elog(ERROR, "cache lookup failed for relation %u", pd->oids[i]);
		d = SysCacheGetAttr(RELOID, tuple, Anum_pg_class_relpartbound, &isnull);
		if (isnull)
			elog(ERROR, "partition %u has no bound", pd->oids[i]);
		spec = castNode(PartitionBoundSpec, stringToNode(TextDatumGetCString(d)));
		ReleaseSysCache(tuple);
		if (spec->is_default || spec->strategy != PARTITION_STRATEGY_RANGE)
			continue;
		lo = bound_value(linitial_node(PartitionRangeDatum, spec->lowerdatums), pl->typid, &lo_text);
		hi = bound_value(linitial_node(PartitionRangeDatum, spec->upperdatums), pl->typid, &hi_text);
		if (lo == pl->lower && hi == pl->upper)
			return pd->oids[i];
		if (lo < pl->upper && hi > pl->lower)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_OBJECT_DEFINITION),
					 errmsg("partition %s of table %s covers [%s, %s), which overlaps the run's data interval %s without being it",
							quote_identifier(get_rel_name(pd->oids[i])), pl->parent_name,
							lo_text, hi_text, pl->interval_text),
					 errhint("A partition load replaces the partition of exactly the run's interval: detach that partition, or load with a schedule whose intervals are its bounds.")));
	}
	return InvalidOid;
}

/*
 * Finds or makes ready the partition of the run's interval; returns the
 * relation to load (an existing partition, emptied, or a new table).
 */
static Oid
prepare_partition(Oid parent_oid, CopyTarget *target, PartitionLoad *pl)
{
	Relation	parent = table_open(parent_oid, AccessShareLock);
	PartitionKey key;
	AttrNumber	attnum;
	pg_tz	   *tz = orch_lookup_timezone(target->timezone);
	char	   *lo_text,
			   *hi_text;
	char	   *nspname = get_namespace_name(RelationGetNamespace(parent));
	char	   *relname;
	Oid			existing;

	pl->parent = parent_oid;
	pl->parent_name = quote_qualified_identifier(nspname, RelationGetRelationName(parent));
	pl->column = pstrdup(quote_identifier(target->partition_by));
	if (parent->rd_rel->relkind != RELKIND_PARTITIONED_TABLE)
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("copy_into cannot load a partition of %s: it is not a partitioned table",
						pl->parent_name),
				 errhint("Create it with PARTITION BY RANGE (%s), or use create_table => true.",
						 pl->column)));
	attnum = get_attnum(parent_oid, target->partition_by);
	if (attnum == InvalidAttrNumber)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_COLUMN),
				 errmsg("column %s of table %s does not exist", pl->column, pl->parent_name)));
	key = RelationGetPartitionKey(parent);
	if (key->strategy != PARTITION_STRATEGY_RANGE || key->partnatts != 1 ||
		key->partattrs[0] != attnum)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_OBJECT_DEFINITION),
				 errmsg("table %s is not partitioned by range on column %s alone",
						pl->parent_name, pl->column),
				 errhint("A partition load needs PARTITION BY RANGE (%s).", pl->column)));
	pl->typid = key->parttypid[0];
	if (pl->typid != TIMESTAMPOID && pl->typid != TIMESTAMPTZOID && pl->typid != DATEOID)
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("column %s of table %s is of type %s, not a timestamp or a date",
						pl->column, pl->parent_name, format_type_be(pl->typid)),
				 errhint("A partition load puts the run's data interval in a partition: the key must be a timestamp, timestamptz or date.")));
	if (OidIsValid(get_default_partition_oid(parent_oid)))
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("copy_into cannot load partitions of table %s: it has a default partition",
						pl->parent_name),
				 errdetail("Attaching a partition to a table with a default partition locks the default partition against its readers and scans it."),
				 errhint("Rows outside the run's interval are set aside as rejects (on_error => 'skip'): no default partition is needed.")));
	if (target->interval_end <= target->interval_start)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("the run's data interval is empty, so there is no partition to load"),
				 errhint("A partition load needs a DAG with a schedule: its runs, manual ones too, have an interval.")));

	pl->lower = interval_end_value(target->interval_start, pl->typid, tz, &pl->lower_literal, &lo_text);
	pl->upper = interval_end_value(target->interval_end, pl->typid, tz, &pl->upper_literal, &hi_text);
	pl->interval_text = psprintf("[%s, %s)", lo_text, hi_text);
	if (pl->upper <= pl->lower)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("the run's data interval %s is empty in the type of column %s",
						pl->interval_text, pl->column)));

	existing = find_interval_partition(parent, pl);
	if (OidIsValid(existing))
	{
		/* replaced whole: emptied, then loaded, in the task's transaction */
		pl->name = quote_qualified_identifier(get_namespace_name(get_rel_namespace(existing)),
											  get_rel_name(existing));
		table_close(parent, NoLock);
		run_utility(psprintf("TRUNCATE TABLE %s", pl->name));
		return existing;
	}

	/* a new table, attached once loaded */
	if (!pg_class_ownercheck(parent_oid, GetUserId()))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("must be owner of table %s to create its partition for %s",
						pl->parent_name, pl->interval_text)));
	relname = psprintf("%s_%s", RelationGetRelationName(parent), partition_suffix(target, tz));
	if (strlen(relname) >= NAMEDATALEN)
		ereport(ERROR,
				(errcode(ERRCODE_NAME_TOO_LONG),
				 errmsg("the name of the partition, \"%s\", is too long", relname),
				 errhint("Give the partitioned table a shorter name.")));
	pl->name = quote_qualified_identifier(nspname, relname);
	if (OidIsValid(get_relname_relid(relname, RelationGetNamespace(parent))))
		ereport(ERROR,
				(errcode(ERRCODE_DUPLICATE_TABLE),
				 errmsg("cannot create the partition %s of table %s for %s: a table of that name exists",
						pl->name, pl->parent_name, pl->interval_text),
				 errhint("Attach it as the partition of that interval, or rename it.")));
	table_close(parent, NoLock);
	run_utility(psprintf("CREATE TABLE %s (LIKE %s INCLUDING DEFAULTS INCLUDING CONSTRAINTS "
						 "INCLUDING GENERATED INCLUDING STORAGE INCLUDING COMPRESSION, "
						 "CONSTRAINT orchestrator_interval CHECK (%s IS NOT NULL "
						 "AND %s OPERATOR(pg_catalog.>=) '%s'::%s AND %s OPERATOR(pg_catalog.<) '%s'::%s))",
						 pl->name, pl->parent_name, pl->column,
						 pl->column, pl->lower_literal, type_sql_name(pl->typid),
						 pl->column, pl->upper_literal, type_sql_name(pl->typid)));
	pl->attach = true;
	return get_relname_relid(relname, RelationGetNamespace(parent));
}

/* The loaded table becomes the partition of the interval. */
static void
attach_partition(PartitionLoad *pl)
{
	run_utility(psprintf("ALTER TABLE %s ATTACH PARTITION %s FOR VALUES FROM ('%s'::%s) TO ('%s'::%s)",
						 pl->parent_name, pl->name,
						 pl->lower_literal, type_sql_name(pl->typid),
						 pl->upper_literal, type_sql_name(pl->typid)));
	/* the CHECK spared ATTACH a scan; the partition's bound says the same now */
	run_utility(psprintf("ALTER TABLE %s DROP CONSTRAINT orchestrator_interval", pl->name));
}

uint64
copy_sink(Stream *input, CopyTarget *target)
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
	bool		partition = (strcmp(target->mode, "partition") == 0);
	PartitionLoad pl;
	CopySkip	skip;

	memset(&pl, 0, sizeof(pl));
	memset(&skip, 0, sizeof(skip));
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
					 errhint("Create it first, or use create_table => true.")));
		if (partition)
			run_utility(psprintf("CREATE TABLE %s (%s) PARTITION BY RANGE (%s)", qname,
								 target->columns ? target->columns : infer_columns(input, target),
								 quote_identifier(target->partition_by)));
		else
			run_utility(psprintf("CREATE TABLE %s (%s)", qname,
								 target->columns ? target->columns : infer_columns(input, target)));
		relid = RangeVarGetRelid(rv, NoLock, false);
	}
	else if (strcmp(target->mode, "replace") == 0)
		run_utility(psprintf("TRUNCATE TABLE %s", qname));
	/* the table named, found: the asset the load updates */
	target->asset = quote_qualified_identifier(get_namespace_name(get_rel_namespace(relid)),
											   get_rel_name(relid));

	if (partition)
	{
		relid = prepare_partition(relid, target, &pl);
		target->loaded = psprintf("%s (the partition of %s for %s%s)", pl.name, pl.parent_name,
								  pl.interval_text, pl.attach ? ", new" : ", replaced");
	}
	else
		target->loaded = qname;

	rel = table_open(relid, RowExclusiveLock);
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

	if (target->skip)
	{
		skip.reject_limit = target->reject_limit;
		skip.run_id = target->run_id;
		skip.task_id = target->task_id;
		skip.map_index = target->map_index;
		skip.try_number = target->try_number;
		if (partition)
		{
			skip.interval_attnum = get_attnum(relid, target->partition_by);
			skip.interval_column = target->partition_by;
			skip.interval_type = pl.typid;
			skip.interval_lower = pl.lower;
			skip.interval_upper = pl.upper;
			skip.interval_text = pl.interval_text;
		}
	}

	copy_stream = input;
	PG_TRY();
	{
		cstate = BeginCopyFrom(pstate, rel, NULL, NULL, false, copy_read_cb, NIL, options);
		if (target->skip)
		{
			rows = copy_from_skipping(cstate, &skip);
			target->rejected = skip.rejected;
		}
		else
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

	if (pl.attach)
		attach_partition(&pl);
	return rows;
}
