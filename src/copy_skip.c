/*-------------------------------------------------------------------------
 *
 * copy_skip.c
 *	  COPY FROM that sets bad rows aside (copy_into's on_error => 'skip'),
 *	  on PostgreSQL 15, whose COPY stops at the first bad row.
 *
 * A bad row is one that does not parse (a missing or extra field, an
 * unterminated quoted field), does not convert (a value its column's type
 * refuses), or breaks a constraint of the target: NOT NULL, CHECK, a
 * partition bound, or the run's data interval in mode => 'partition'.
 * Such a row stays out of the table and is written to
 * orchestrator.rejects, in the task's transaction: the good rows, the
 * rejects and the task's state commit together.
 *
 * PostgreSQL 15 raises an ERROR for each of these, and only a
 * subtransaction can catch an ERROR safely (a type's input function, a
 * domain's or a CHECK constraint's function can run any SQL).  A
 * subtransaction per row costs too much, and one around a batch of
 * inserted rows would lose the batch's good rows at the first bad one.
 * So each batch goes in two phases:
 *
 * 1. Check, in a subtransaction that writes nothing (and so has no
 *	  transaction id): each row is read with the COPY API (NextCopyFrom, as
 *	  file_fdw does), its stored generated columns computed, it is routed to
 *	  its partition, and its constraints are checked, into a slot of the
 *	  batch.  A row that raises a data error (SQLSTATE class 22 or 23) rolls
 *	  the subtransaction back, which undoes nothing of the rows already
 *	  checked (they are in our memory, not in the table), is recorded as a
 *	  reject, and a new subtransaction goes on with the next row.  Any other
 *	  error (a cancel, out of memory, a line COPY cannot even split, such as
 *	  one with a stray carriage return or an invalid byte, after which it
 *	  cannot find the next line) fails the load.
 *
 * 2. Insert the batch's good rows, in the task's transaction itself, as
 *	  CopyFrom does: table_multi_insert, index entries, AFTER ROW triggers
 *	  (one row at a time for a partitioned table or one with BEFORE ROW
 *	  triggers).  An error here (a unique key, a foreign key, a trigger)
 *	  fails the load, as in on_error => 'stop'.
 *
 * Rows with no bad row among them thus cost a slot copy and a cheap
 * subtransaction per batch of 1,000 more than CopyFrom; a bad row costs a
 * subtransaction rollback.  Memory holds one batch, whatever the size of
 * the data.
 *
 * Rejects are written by the catalog's owner (the task runs as the DAG's
 * owner, who may read its rejects but not write them), with a statement
 * whose names are all qualified and whose parameters have the columns'
 * types, so that nothing the owner put in its search_path is reached.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/heapam.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "commands/copy.h"
#include "commands/copyfrom_internal.h"
#include "commands/progress.h"
#include "commands/trigger.h"
#include "executor/execPartition.h"
#include "executor/executor.h"
#include "executor/nodeModifyTable.h"
#include "executor/spi.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "utils/builtins.h"
#include "utils/date.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/resowner.h"
#include "utils/syscache.h"

#include "copy_skip.h"
#include "orchestrator.h"

/* a batch: as many rows as CopyFrom buffers, or this many bytes of lines */
#define BATCH_ROWS		1000
#define BATCH_BYTES		65536

/* a reject's raw line and error are cut at this many bytes */
#define REJECT_TEXT_MAX	8192

/* how many rejects the error of a load over its reject_limit names */
#define REJECTS_SHOWN	3

typedef struct Reject
{
	uint64		line_number;
	char	   *raw_line;
	char	   *error;
	char	   *sqlstate;
} Reject;

typedef struct SkipState
{
	CopySkip   *opts;
	CopyFromState cstate;
	MemoryContext load_cxt;		/* lives as long as the load */
	MemoryContext batch_cxt;	/* reset after each batch */
	ResourceOwner outer_owner;
	List	   *pending;		/* rejects not written yet (in batch_cxt) */
	StringInfoData shown;		/* the first few, for the limit's error */
	int			nshown;
} SkipState;

/* the statement writing rejects, prepared once per process */
static SPIPlanPtr reject_plan = NULL;

/* The role owning orchestrator.rejects: the catalog's owner. */
Oid
rejects_owner(void)
{
	Oid			relid = get_relname_relid("rejects",
										  get_namespace_oid("orchestrator", false));
	HeapTuple	tuple;
	Oid			owner;

	if (!OidIsValid(relid))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("table orchestrator.rejects is missing"),
				 errhint("Run ALTER EXTENSION orchestrator UPDATE.")));
	tuple = SearchSysCache1(RELOID, ObjectIdGetDatum(relid));
	if (!HeapTupleIsValid(tuple))
		elog(ERROR, "cache lookup failed for relation %u", relid);
	owner = ((Form_pg_class) GETSTRUCT(tuple))->relowner;
	ReleaseSysCache(tuple);
	return owner;
}

/* s cut to at most max bytes, at a character boundary */
static char *
clip(const char *s, int len, int max)
{
	StringInfoData buf;

	if (len <= max)
		return pnstrdup(s, len);
	initStringInfo(&buf);
	appendBinaryStringInfo(&buf, s, pg_mbcliplen(s, len, max));
	appendStringInfoString(&buf, " [...]");
	return buf.data;
}

/* Writes the pending rejects, as the catalog's owner. */
static void
write_rejects(SkipState *ss)
{
	Oid			save_userid;
	int			save_sec_context;
	ListCell   *lc;

	if (ss->pending == NIL)
		return;
	GetUserIdAndSecContext(&save_userid, &save_sec_context);
	SetUserIdAndSecContext(rejects_owner(),
						   save_sec_context | SECURITY_LOCAL_USERID_CHANGE |
						   SECURITY_RESTRICTED_OPERATION);
	SPI_connect();
	if (reject_plan == NULL)
	{
		Oid			types[8] = {INT8OID, TEXTOID, INT4OID, INT8OID, TEXTOID, TEXTOID, TEXTOID, INT4OID};
		SPIPlanPtr	plan;

		plan = SPI_prepare("INSERT INTO orchestrator.rejects (run_id, task_id, try_number, "
						   " line_number, raw_line, error, sqlstate, map_index) "
						   "VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
						   8, types);
		if (plan == NULL)
			elog(ERROR, "could not prepare the statement writing rejects: %s",
				 SPI_result_code_string(SPI_result));
		SPI_keepplan(plan);
		reject_plan = plan;
	}
	foreach(lc, ss->pending)
	{
		Reject	   *r = lfirst(lc);
		Datum		values[8];
		int			rc;

		values[0] = Int64GetDatum(ss->opts->run_id);
		values[1] = CStringGetTextDatum(ss->opts->task_id);
		values[2] = Int32GetDatum(ss->opts->try_number);
		values[3] = Int64GetDatum((int64) r->line_number);
		values[4] = CStringGetTextDatum(r->raw_line);
		values[5] = CStringGetTextDatum(r->error);
		values[6] = CStringGetTextDatum(r->sqlstate);
		values[7] = Int32GetDatum(ss->opts->map_index);
		rc = SPI_execute_plan(reject_plan, values, NULL, false, 0);
		if (rc != SPI_OK_INSERT)
			elog(ERROR, "could not write a reject: %s", SPI_result_code_string(rc));
	}
	SPI_finish();
	SetUserIdAndSecContext(save_userid, save_sec_context);
	ss->pending = NIL;
}

/*
 * A row's error that on_error => 'skip' sets aside: a data exception or an
 * integrity constraint violation, raised once COPY had the whole line.
 */
static bool
is_row_error(SkipState *ss, ErrorData *edata)
{
	int			class = ERRCODE_TO_CATEGORY(edata->sqlerrcode);

	if (!ss->cstate->line_buf_valid)
		return false;
	return class == ERRCODE_DATA_EXCEPTION ||
		class == ERRCODE_INTEGRITY_CONSTRAINT_VIOLATION;
}

/* Records the current line as a reject; fails the load past the limit. */
static void
add_reject(SkipState *ss, ErrorData *edata)
{
	CopyFromState cstate = ss->cstate;
	MemoryContext old = MemoryContextSwitchTo(ss->batch_cxt);
	Reject	   *r = palloc(sizeof(Reject));
	char	   *error;

	if (cstate->cur_attname != NULL)
		error = psprintf("column %s: %s", cstate->cur_attname, edata->message);
	else
		error = pstrdup(edata->message);
	r->line_number = cstate->cur_lineno;
	r->raw_line = clip(cstate->line_buf.data, cstate->line_buf.len, REJECT_TEXT_MAX);
	r->error = clip(error, strlen(error), REJECT_TEXT_MAX);
	r->sqlstate = pstrdup(unpack_sql_state(edata->sqlerrcode));
	ss->pending = lappend(ss->pending, r);
	MemoryContextSwitchTo(old);

	/* what COPY's error context would say of the next row is its own */
	cstate->cur_attname = NULL;
	cstate->cur_attval = NULL;

	ss->opts->rejected++;
	if (ss->nshown < REJECTS_SHOWN)
	{
		old = MemoryContextSwitchTo(ss->load_cxt);
		appendStringInfo(&ss->shown, "%sline " UINT64_FORMAT ": %s",
						 ss->nshown > 0 ? "\n" : "", r->line_number,
						 clip(r->error, strlen(r->error), 200));
		ss->nshown++;
		MemoryContextSwitchTo(old);
	}
	if (ss->opts->reject_limit >= 0 && ss->opts->rejected > (uint64) ss->opts->reject_limit)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_EXCEPTION),
				 errmsg("copy_into set aside more than " INT64_FORMAT " bad rows (reject_limit): nothing is loaded",
						ss->opts->reject_limit),
				 errdetail("The first bad rows:\n%s", ss->shown.data),
				 errhint("Fix the data, or raise reject_limit.")));
}

static void
begin_check(SkipState *ss)
{
	MemoryContext old = CurrentMemoryContext;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(old);
}

static void
end_check(SkipState *ss, bool commit)
{
	MemoryContext old = CurrentMemoryContext;

	if (commit)
		ReleaseCurrentSubTransaction();
	else
		RollbackAndReleaseCurrentSubTransaction();
	MemoryContextSwitchTo(old);
	CurrentResourceOwner = ss->outer_owner;
}

/* The data interval a row of mode => 'partition' must fall in. */
static void
check_interval(CopySkip *opts, TupleTableSlot *slot)
{
	bool		isnull;
	Datum		d = slot_getattr(slot, opts->interval_attnum, &isnull);
	int64		v = 0;

	if (!isnull)
		v = (opts->interval_type == DATEOID) ? (int64) DatumGetDateADT(d) : DatumGetInt64(d);
	if (isnull || v < opts->interval_lower || v >= opts->interval_upper)
	{
		Oid			typoutput;
		bool		varlena;

		getTypeOutputInfo(opts->interval_type, &typoutput, &varlena);
		ereport(ERROR,
				(errcode(ERRCODE_CHECK_VIOLATION),
				 errmsg("%s %s is outside the run's data interval %s",
						quote_identifier(opts->interval_column),
						isnull ? "null" : OidOutputFunctionCall(typoutput, d),
						opts->interval_text)));
	}
}

/*
 * Loads the rows of cstate into its relation, setting bad rows aside;
 * returns how many were loaded.  Like CopyFrom, without a WHERE clause.
 */
uint64
copy_from_skipping(CopyFromState cstate, CopySkip *opts)
{
	Relation	rel = cstate->rel;
	SkipState	ss;
	EState	   *estate = CreateExecutorState();
	ResultRelInfo *rri;
	ModifyTableState *mtstate;
	PartitionTupleRouting *proute = NULL;
	TriggerDesc *trigdesc;
	ExprContext *econtext;
	BulkInsertState bistate;
	CommandId	mycid = GetCurrentCommandId(true);
	int			ti_options = 0;
	bool		one_by_one;
	bool		has_generated;
	TupleTableSlot **slots;
	ResultRelInfo **leaves;
	uint64	   *linenos;
	uint64		processed = 0;
	volatile bool eof = false;
	ErrorContextCallback errcallback;

	memset(&ss, 0, sizeof(ss));
	ss.opts = opts;
	ss.cstate = cstate;
	ss.load_cxt = CurrentMemoryContext;
	ss.batch_cxt = AllocSetContextCreate(CurrentMemoryContext, "copy_into batch",
										 ALLOCSET_DEFAULT_SIZES);
	ss.outer_owner = CurrentResourceOwner;
	initStringInfo(&ss.shown);
	opts->rejected = 0;

	if (RELKIND_HAS_STORAGE(rel->rd_rel->relkind) &&
		(rel->rd_createSubid != InvalidSubTransactionId ||
		 rel->rd_firstRelfilenodeSubid != InvalidSubTransactionId))
		ti_options |= TABLE_INSERT_SKIP_FSM;

	ExecInitRangeTable(estate, cstate->range_table);
	rri = makeNode(ResultRelInfo);
	ExecInitResultRelation(estate, rri, 1);
	CheckValidResultRel(rri, CMD_INSERT);
	trigdesc = rri->ri_TrigDesc;
	if (rri->ri_FdwRoutine != NULL ||
		(trigdesc != NULL && (trigdesc->trig_insert_instead_row ||
							  trigdesc->trig_insert_new_table)))
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("copy_into cannot skip bad rows loading \"%s\"",
						RelationGetRelationName(rel)),
				 errdetail("on_error => 'skip' loads tables, partitioned or not, without INSTEAD OF triggers or triggers with transition tables.")));
	ExecOpenIndices(rri, false);

	mtstate = makeNode(ModifyTableState);
	mtstate->ps.plan = NULL;
	mtstate->ps.state = estate;
	mtstate->operation = CMD_INSERT;
	mtstate->mt_nrels = 1;
	mtstate->resultRelInfo = rri;
	mtstate->rootResultRelInfo = rri;

	AfterTriggerBeginQuery();
	if (rel->rd_rel->relkind == RELKIND_PARTITIONED_TABLE)
		proute = ExecSetupPartitionTupleRouting(estate, rel);
	ExecBSInsertTriggers(estate, rri);

	econtext = GetPerTupleExprContext(estate);
	bistate = GetBulkInsertState();
	one_by_one = (proute != NULL ||
				  (trigdesc != NULL && trigdesc->trig_insert_before_row));
	has_generated = (rel->rd_att->constr != NULL &&
					 rel->rd_att->constr->has_generated_stored);

	/* (made here, so that they belong to the load, not to a check) */
	slots = palloc0(sizeof(TupleTableSlot *) * BATCH_ROWS);
	for (int i = 0; i < BATCH_ROWS; i++)
		slots[i] = table_slot_create(rel, NULL);
	leaves = palloc0(sizeof(ResultRelInfo *) * BATCH_ROWS);
	linenos = palloc0(sizeof(uint64) * BATCH_ROWS);

	/* errors say which line, as COPY's do */
	errcallback.callback = CopyFromErrorCallback;
	errcallback.arg = (void *) cstate;
	errcallback.previous = error_context_stack;
	error_context_stack = &errcallback;

	while (!eof)
	{
		volatile int n = 0;
		volatile int bytes = 0;

		/* 1. read and check a batch, setting bad rows aside */
		begin_check(&ss);
		while (n < BATCH_ROWS && bytes < BATCH_BYTES)
		{
			TupleTableSlot *slot;

			CHECK_FOR_INTERRUPTS();
			slot = slots[n];
			ExecClearTuple(slot);
			ResetPerTupleExprContext(estate);

			PG_TRY();
			{
				MemoryContext old = MemoryContextSwitchTo(GetPerTupleMemoryContext(estate));
				ResultRelInfo *target = rri;
				TupleTableSlot *checked = slot;

				if (!NextCopyFrom(cstate, econtext, slot->tts_values, slot->tts_isnull))
					eof = true;
				else
				{
					ExecStoreVirtualTuple(slot);
					if (proute != NULL)
					{
						TupleConversionMap *map;
						ResourceOwner check_owner = CurrentResourceOwner;

						/*
						 * A partition opened here stays open for the whole
						 * load, whatever becomes of this check.
						 */
						CurrentResourceOwner = ss.outer_owner;
						target = ExecFindPartition(mtstate, rri, proute, slot, estate);
						CurrentResourceOwner = check_owner;
						map = target->ri_RootToPartitionMap;
						if (map != NULL)
							checked = execute_attr_map_slot(map->attrMap, slot,
															target->ri_PartitionTupleSlot);
						if (target->ri_RelationDesc->rd_att->constr != NULL &&
							target->ri_RelationDesc->rd_att->constr->has_generated_stored)
							ExecComputeStoredGenerated(target, estate, checked, CMD_INSERT);
					}
					else if (has_generated)
						ExecComputeStoredGenerated(rri, estate, slot, CMD_INSERT);
					if (opts->interval_attnum > 0)
						check_interval(opts, checked);
					if (target->ri_RelationDesc->rd_att->constr != NULL)
						ExecConstraints(target, checked, estate);
					if (proute == NULL && rel->rd_rel->relispartition)
						(void) ExecPartitionCheck(rri, slot, estate, true);
					/* the values outlive the row's memory */
					ExecMaterializeSlot(slot);
					leaves[n] = target;
					linenos[n] = cstate->cur_lineno;
					bytes += cstate->line_buf.len;
					n++;
				}
				MemoryContextSwitchTo(old);
			}
			PG_CATCH();
			{
				ErrorData  *edata;

				MemoryContextSwitchTo(ss.batch_cxt);
				edata = CopyErrorData();
				FlushErrorState();
				end_check(&ss, false);
				if (!is_row_error(&ss, edata))
					ReThrowError(edata);
				add_reject(&ss, edata);
				begin_check(&ss);
			}
			PG_END_TRY();
			if (eof)
				break;
		}
		end_check(&ss, true);
		write_rejects(&ss);

		/* 2. insert the batch's good rows, in the task's transaction */
		if (n > 0)
		{
			MemoryContext old = MemoryContextSwitchTo(GetPerTupleMemoryContext(estate));
			uint64		lineno = cstate->cur_lineno;

			/* the line in COPY's error context is the row's, not the last read */
			cstate->line_buf_valid = false;
			if (!one_by_one)
			{
				table_multi_insert(rel, slots, n, mycid, ti_options, bistate);
				for (int i = 0; i < n; i++)
				{
					List	   *recheck = NIL;

					cstate->cur_lineno = linenos[i];
					if (rri->ri_NumIndices > 0)
						recheck = ExecInsertIndexTuples(rri, slots[i], estate, false,
														false, NULL, NIL);
					if (trigdesc != NULL && trigdesc->trig_insert_after_row)
						ExecARInsertTriggers(estate, rri, slots[i], recheck, NULL);
					list_free(recheck);
				}
				processed += n;
			}
			else
			{
				for (int i = 0; i < n; i++)
				{
					ResultRelInfo *target = leaves[i];
					TupleTableSlot *slot = slots[i];
					Relation	trel = target->ri_RelationDesc;
					List	   *recheck = NIL;

					ResetPerTupleExprContext(estate);
					cstate->cur_lineno = linenos[i];
					if (target != rri)
					{
						TupleConversionMap *map = target->ri_RootToPartitionMap;

						if (map != NULL)
							slot = execute_attr_map_slot(map->attrMap, slot,
														 target->ri_PartitionTupleSlot);
					}
					if (target->ri_TrigDesc != NULL &&
						target->ri_TrigDesc->trig_insert_before_row)
					{
						if (!ExecBRInsertTriggers(estate, target, slot))
							continue;	/* the trigger dropped the row */
						/* a trigger may change the row: check it again */
						if (trel->rd_att->constr != NULL && trel->rd_att->constr->has_generated_stored)
							ExecComputeStoredGenerated(target, estate, slot, CMD_INSERT);
						if (trel->rd_att->constr != NULL)
							ExecConstraints(target, slot, estate);
						if (trel->rd_rel->relispartition)
							(void) ExecPartitionCheck(target, slot, estate, true);
					}
					else if (target != rri && trel->rd_att->constr != NULL &&
							 trel->rd_att->constr->has_generated_stored)
						ExecComputeStoredGenerated(target, estate, slot, CMD_INSERT);
					table_tuple_insert(trel, slot, mycid, ti_options,
									   target == rri ? bistate : NULL);
					if (target->ri_NumIndices > 0)
						recheck = ExecInsertIndexTuples(target, slot, estate, false,
														false, NULL, NIL);
					ExecARInsertTriggers(estate, target, slot, recheck, NULL);
					list_free(recheck);
					processed++;
				}
			}
			cstate->cur_lineno = lineno;
			MemoryContextSwitchTo(old);
			pgstat_progress_update_param(PROGRESS_COPY_TUPLES_PROCESSED, processed);
		}
		pgstat_progress_update_param(PROGRESS_COPY_TUPLES_EXCLUDED, opts->rejected);
		MemoryContextReset(ss.batch_cxt);
	}

	error_context_stack = errcallback.previous;

	FreeBulkInsertState(bistate);
	ExecASInsertTriggers(estate, rri, NULL);
	AfterTriggerEndQuery(estate);
	for (int i = 0; i < BATCH_ROWS; i++)
		ExecDropSingleTupleTableSlot(slots[i]);
	ExecResetTupleTable(estate->es_tupleTable, false);
	if (proute != NULL)
		ExecCleanupTupleRouting(mtstate, proute);
	ExecCloseResultRelations(estate);
	ExecCloseRangeTableRelations(estate);
	FreeExecutorState(estate);
	MemoryContextDelete(ss.batch_cxt);
	return processed;
}
