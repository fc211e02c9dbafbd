/*-------------------------------------------------------------------------
 *
 * task.h
 *	  A claimed task instance, as the worker and the operators see it.
 *
 *-------------------------------------------------------------------------
 */
#ifndef ORCHESTRATOR_TASK_H
#define ORCHESTRATOR_TASK_H

#include "datatype/timestamp.h"
#include "utils/jsonb.h"

#include "stream.h"
#include "template.h"

typedef struct TaskRun
{
	int64		run_id;
	char	   *dag_id;
	char	   *task_id;
	int			map_index;		/* -1: not mapped */
	char	   *run_type;
	int			try_number;
	Oid			owner;			/* InvalidOid: no one */
	char	   *owner_name;
	uint64		owner_sysid;	/* the cluster "owner" belongs to */
	Jsonb	   *spec;			/* NULL if the task is no longer defined */
	int64		timeout_ms;		/* execution_timeout, 0 for none */
	TemplateContext ctx;		/* for rendering templates */
	Oid			input_loid;		/* the input task's artifact, if any */

	/* what the operator produced, recorded with the task's success */
	bool		has_artifact;
	ArtifactInfo artifact;
	char	   *url;
	long		http_status;
	char	   *content_type;
	bool		has_rows;
	uint64		rows_loaded;

	/* caching (cache_expiration) */
	char	   *input_sha256;	/* the input artifact's, for gunzip's key */
	bool		cache;			/* the task has a cache_expiration */
	char	   *cache_key;
	bool		has_entry;		/* an earlier artifact with the same key */
	ArtifactInfo entry;
	char	   *entry_content_type;
	char	   *entry_url;
	long		entry_status;
	char	   *entry_etag;
	char	   *entry_last_modified;
	TimestampTz entry_created_at;
	bool		cached;			/* the output is the entry's */
	char	   *etag;			/* validators of the output */
	char	   *last_modified;
	TimestampTz artifact_created_at;	/* 0: now */

	/* sensors (sensor.c) */
	bool		poke_ok;		/* the poke found its condition true */
	TimestampTz first_poke_at;	/* when the try's first poke started */
	bool		continuing;		/* a later poke of the same try */
	bool		no_retry;		/* the failure is final: a sensor's timeout */

	/* assets, recorded with the success: outlets, a copy_into's table */
	List	   *outlets;		/* templates, as defined */
	char	   *asset_table;
} TaskRun;

/* operators (op_sql.c, op_data.c) */
extern void op_sql_run(TaskRun *task);
extern void op_http_fetch_run(TaskRun *task);
extern void op_gunzip_run(TaskRun *task);
extern void op_copy_into_run(TaskRun *task);
extern void op_webhook_run(TaskRun *task);
extern void op_sensor_poke(TaskRun *task);
extern int64 op_interval_ms(const char *text);
extern void op_http_request(TaskRun *task, HttpRequest *out);
extern char *op_cache_key(TaskRun *task);
extern void op_use_cache_entry(TaskRun *task, const char *why);

#endif							/* ORCHESTRATOR_TASK_H */
