/*-------------------------------------------------------------------------
 *
 * artifact.c
 *	  Artifacts: a task's output, stored as a large object.
 *
 * A large object is written in the task's own transaction, so an artifact
 * commits with the task's success, or vanishes with its rollback; it is
 * owned by the DAG's owner (the worker writes it as the owner), and it
 * replicates to standbys with the rest of the database.  The artifact
 * source reads one back for a downstream task; the sink writes one,
 * computing its size and SHA-256 as the bytes pass.  Deleting an artifact
 * row (with its run, when a DAG is dropped or history purged) unlinks its
 * large object, by a trigger.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_largeobject.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "common/cryptohash.h"
#include "common/sha2.h"
#include "fmgr.h"
#include "libpq/be-fsstubs.h"
#include "libpq/libpq-fs.h"
#include "miscadmin.h"
#include "parser/parse_relation.h"
#include "storage/large_object.h"
#include "utils/builtins.h"
#include "utils/rel.h"

#include "stream.h"

#define ARTIFACT_CHUNK (256 * 1024)

typedef struct ArtifactState
{
	LargeObjectDesc *lo;
} ArtifactState;

static size_t
artifact_read(Stream *stream, char *buf, size_t len)
{
	ArtifactState *st = stream->state;
	int			n;

	if (st->lo == NULL)
		return 0;
	n = inv_read(st->lo, buf, (int) Min(len, (size_t) INT_MAX));
	if (n == 0)
	{
		inv_close(st->lo);
		st->lo = NULL;
	}
	stream_count_input(n);
	return n;
}

/*
 * inv_api keeps pg_largeobject open until end of transaction only for the
 * lo_* SQL functions; code that calls it directly closes it when done.
 */
void
artifact_done(void)
{
	close_lo_relation(true);
}

Stream *
artifact_source(Oid loid)
{
	ArtifactState *st = palloc0(sizeof(ArtifactState));

	if (!LargeObjectExists(loid))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("the artifact's large object %u no longer exists", loid)));
	st->lo = inv_open(loid, INV_READ, CurrentMemoryContext);
	return stream_new("artifact", artifact_read, NULL, st);
}

void
artifact_sink(Stream *input, ArtifactInfo *info)
{
	LargeObjectDesc *lo;
	pg_cryptohash_ctx *sha;
	uint8		digest[PG_SHA256_DIGEST_LENGTH];
	char	   *buf = palloc(ARTIFACT_CHUNK);
	size_t		n;

	memset(info, 0, sizeof(ArtifactInfo));
	info->loid = inv_create(InvalidOid);
	lo = inv_open(info->loid, INV_WRITE, CurrentMemoryContext);
	sha = pg_cryptohash_create(PG_SHA256);
	if (sha == NULL || pg_cryptohash_init(sha) < 0)
		elog(ERROR, "could not initialize SHA-256");

	while ((n = stream_read(input, buf, ARTIFACT_CHUNK)) > 0)
	{
		inv_write(lo, buf, (int) n);
		if (pg_cryptohash_update(sha, (uint8 *) buf, n) < 0)
			elog(ERROR, "could not compute SHA-256");
		info->size += n;
	}
	inv_close(lo);
	if (pg_cryptohash_final(sha, digest, sizeof(digest)) < 0)
		elog(ERROR, "could not compute SHA-256");
	pg_cryptohash_free(sha);
	hex_encode((char *) digest, sizeof(digest), info->sha256);
	info->sha256[64] = '\0';
	pfree(buf);
}

PG_FUNCTION_INFO_V1(orch_artifact_unlink);

/* AFTER DELETE trigger on orchestrator.artifact: unlinks the large object. */
Datum
orch_artifact_unlink(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	bool		isnull;
	Datum		loid;

	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_BY_DELETE(trigdata->tg_event))
		elog(ERROR, "orch_artifact_unlink: must be called as a DELETE trigger");
	loid = heap_getattr(trigdata->tg_trigtuple,
						attnameAttNum(trigdata->tg_relation, "loid", false),
						RelationGetDescr(trigdata->tg_relation), &isnull);
	if (isnull || !LargeObjectExists(DatumGetObjectId(loid)))
		return PointerGetDatum(trigdata->tg_trigtuple);

	/* a cached artifact shares its large object: only the last one unlinks */
	SPI_connect();
	/* not read-only: see the rows this same statement (a cascade) deleted */
	if (SPI_execute_with_args("SELECT 1 FROM orchestrator.artifact WHERE loid = $1",
							  1, (Oid[]) {OIDOID}, &loid, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not look up artifacts");
	if (SPI_processed == 0)
		DirectFunctionCall1(be_lo_unlink, loid);
	SPI_finish();
	return PointerGetDatum(trigdata->tg_trigtuple);
}
